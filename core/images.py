"""Safe image decoding and the conversions every engine shares.

Uploaded bytes are untrusted: we check the header's dimensions against a pixel budget *before*
decoding (a 20000x20000 PNG header is rejected without allocating 1.6 GB), force a full decode so a
truncated file fails here rather than inside an engine, and normalise to RGB.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from core.errors import UserError

#: Default pixel budget for one decoded upload (about 64 MP: a large photo, not a bomb).
DEFAULT_MAX_PIXELS = 64_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


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


def decode_image(data: bytes, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode untrusted bytes into an RGB image, fully loaded. Raises :class:`UserError` on bad input."""
    probe_image(data, field, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # a truncated file fails here, not later inside an engine
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{field}: the image file is damaged or truncated", field, 422) from exc


def load_image(path_or_file: str | BinaryIO, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read and decode an image from a path or file object (same checks as :func:`decode_image`)."""
    if isinstance(path_or_file, str):
        with open(path_or_file, "rb") as fh:
            return decode_image(fh.read(), field, max_pixels)
    return decode_image(path_or_file.read(), field, max_pixels)


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
