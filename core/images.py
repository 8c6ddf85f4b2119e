"""Safe image decoding and the conversions every engine shares.

Uploaded bytes are untrusted: we check the header's dimensions against a pixel budget *before*
decoding (a 20000x20000 PNG header is rejected without allocating 1.6 GB). A web request does only
that and a cheap completeness check (:func:`check_complete`); the full decode, EXIF orientation and
downscaling to the size a job needs happen in the worker (:func:`decode_image` with ``longest``), which
also fails a truncated file there with a clear reason rather than inside an engine.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import UserError

#: Default pixel budget for one decoded upload (about 64 MP: a large photo, not a bomb).
DEFAULT_MAX_PIXELS = 64_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
#: File name endings of those formats (dataset folders and archives are scanned by name first).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def probe_image(data: bytes, field: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Return ``(format, width, height)`` reading only the header; raise :class:`UserError` if unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format or "", img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise UserError(f"{field}: image is too large to decode safely", field, 413) from exc
        raise UserError(f"{field}: not a readable image (PNG, JPEG, WebP, BMP, TIFF or GIF)", field, 415) from exc
    except Exception as exc:  # PIL raises a zoo of errors for malformed headers
        raise UserError(f"{field}: not a readable image ({exc.__class__.__name__})", field, 415) from exc
    if fmt not in ALLOWED_FORMATS:
        raise UserError(f"{field}: unsupported image format {fmt or 'unknown'}", field, 415)
    if w <= 0 or h <= 0:
        raise UserError(f"{field}: image has no pixels", field, 422)
    if w * h > max_pixels:
        raise UserError(
            f"{field}: image is {w}x{h} pixels; the limit is {max_pixels:,} pixels", field, 413
        )
    return fmt, w, h


#: What each accepted format is served as: the type comes from what the bytes decode to, never from the
#: client's ``Content-Type`` or file name.
FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp",
                "TIFF": "image/tiff", "GIF": "image/gif"}
#: EXIF orientations that turn the picture by 90 degrees (its displayed width is the stored height).
_QUARTER_TURNS = {5, 6, 7, 8}


def oriented_size(data: bytes) -> tuple[int, int] | None:
    """The displayed size (after the EXIF orientation a phone wrote) read from the header, or None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if img.format == "JPEG":  # EXIF sits in a header segment; reading it decodes no pixels
                orientation = img.getexif().get(0x0112, 1)
            else:  # elsewhere getexif() may decode the whole image (PNG): use only what the header holds
                exif = Image.Exif()
                if img.info.get("exif"):
                    exif.load(img.info["exif"])
                orientation = exif.get(0x0112, 1)
    except Exception:  # a header PIL cannot read was refused by probe_image already
        return None
    return (h, w) if orientation in _QUARTER_TURNS else (w, h)


def check_complete(data: bytes, fmt: str, field: str) -> None:
    """Catch truncated files without decoding pixels: PNG chunks (lengths and CRCs) must run to IEND,
    a JPEG must end with its end-of-image marker, a WebP's RIFF size must match. Cheap enough for a
    request thread; other formats are fully checked when the worker decodes them."""
    damaged = UserError(f"{field}: the image file is damaged or truncated", field, 422)
    if fmt == "PNG":
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.verify()  # walks the chunks and checks their CRCs; decompresses nothing
        except Exception as exc:
            raise damaged from exc
    elif fmt == "JPEG":
        if b"\xff\xd9" not in data[-4096:]:
            raise damaged
    elif fmt == "WEBP":
        if len(data) < 12 or int.from_bytes(data[4:8], "little") + 8 > len(data):
            raise damaged


def decode_image(data: bytes, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                 longest: int | None = None) -> Image.Image:
    """Decode untrusted bytes into an RGB image, upright (EXIF orientation applied) and fully loaded.

    With ``longest``, the image is decoded no larger than needed: JPEG decodes at 1/2, 1/4 or 1/8 scale
    straight from the file (``draft``), other formats are reduced right after decoding, and the result
    is scaled down (never up) so its longest side is ``longest``. A 6000x6000 style for a 512 px job is
    then never held at full size longer than one decode. Raises :class:`UserError` on bad input.
    """
    probe_image(data, field, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if longest and img.format == "JPEG":
                img.draft("RGB", (longest, longest))  # the decoder's own downscaling: never below longest
            img.load()  # a truncated file fails here, not later inside an engine
            out = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{field}: the image file is damaged or truncated", field, 422) from exc
    if longest and max(out.size) > longest:
        out = out.resize(scaled_size(out.width, out.height, longest), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return out


def load_image(path_or_file: str | BinaryIO, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
               longest: int | None = None) -> Image.Image:
    """Read and decode an image from a path or file object (same checks as :func:`decode_image`)."""
    if isinstance(path_or_file, str):
        with open(path_or_file, "rb") as fh:
            return decode_image(fh.read(), field, max_pixels, longest)
    return decode_image(path_or_file.read(), field, max_pixels, longest)


def scaled_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """Size with the longest side ``longest`` and the other side rounded to the nearest pixel."""
    if width >= height:
        return longest, max(1, round(height * longest / width))
    return max(1, round(width * longest / height)), longest


def resize_longest(img: Image.Image, longest: int) -> Image.Image:
    """Scale so the longest side is ``longest`` with PIL's bicubic filter (a no-op when already there)."""
    size = scaled_size(img.width, img.height, longest)
    return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_jpeg(img: Image.Image, longest: int = 256, quality: int = 85) -> bytes:
    """A small JPEG for previews and job-list thumbnails."""
    thumb = img.convert("RGB")
    thumb.thumbnail((longest, longest), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
