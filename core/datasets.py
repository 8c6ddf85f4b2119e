"""Dataset uploads for CycleGAN and pix2pix: unpack safely, validate, and store in one canonical layout.

An upload is a zip archive (bytes or a seekable binary file) or several files (``(filename, bytes)``
pairs, where a ``.zip`` among them is unpacked too). What comes out in ``dest_dir``:

- layout ``unpaired``: ``trainA/`` and ``trainB/`` (accepted in the upload as ``trainA/ trainB/`` or
  ``A/ B/``, any letter case, optionally inside one top-level folder);
- layout ``paired``: ``A/`` and ``B/`` holding files with the same names, from either two folders with
  matching file names (``A/ B/`` or ``trainA/ trainB/``, matched by name without extension) or from
  side-by-side ``A|B`` images (the reference's aligned format), which are split in half here;
- every image at most ``max_side`` pixels on its longest side (each half, for side-by-side images):
  larger ones are downscaled once here and stored as PNG, so training never decodes huge files;
- ``dataset.json``: the report returned by :func:`ingest_dataset`.

Uploads are untrusted. Guards, in the order they apply:
- archive level (the whole upload is refused, HTTP 413), from the archive's directory before anything
  is unpacked: too many members, too many uncompressed bytes in total, a member (or the archive as a
  whole) whose compression ratio is implausible for an image (a zip bomb); and while unpacking, a member
  that yields more bytes than it declares;
- member level (the member is skipped and reported): absolute paths, ``..`` components, drive letters
  (zip-slip), symbolic links, encrypted or nested archives, non-image files, images that do not decode
  (checked by :mod:`core.images`, which also refuses decompression bombs), images below the minimum
  size, pairs with a missing or differently sized partner.

Memory stays bounded by one member, not by the archive: each member is streamed in chunks to a numbered
file in the staging directory, then read back, validated and stored one at a time (at most one member's
bytes and one decoded image at once). Nothing is ever written to a path taken from the archive: stored
names are rebuilt from a sanitised form, and everything goes to a staging directory that is renamed to
``dest_dir`` only on success and removed on any failure. Nothing here imports torch; the web process
calls it directly.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from core.atomic import write_atomically
from core.errors import UserError
from core.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    decode_image,
    encode_png,
    probe_image,
    scaled_size,
)

if TYPE_CHECKING:
    from core.settings import Settings

LAYOUTS = ("unpaired", "paired")
Upload = bytes | BinaryIO | Sequence[tuple[str, bytes]]

_DOMAIN_A = {"traina", "a"}
_DOMAIN_B = {"trainb", "b"}
_UNUSED_SPLITS = {"testa", "testb", "vala", "valb", "test", "val"}
_JUNK = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20  # bytes read from an archive member at a time
_RAW = ".members"  # inside the staging directory: numbered copies of archive members, removed before the rename
_DAMAGED = (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, zlib.error)


@dataclass(frozen=True)
class IngestLimits:
    """What one dataset upload may cost. The defaults suit the CLI, tests and the demo builder; the web
    builds the limits from its settings with :meth:`from_settings`."""

    max_members: int = 20_000  # archive members (or files) in one upload
    max_total_bytes: int = 2 << 30  # uncompressed, whole upload
    max_file_bytes: int = 64 << 20  # one member
    max_ratio: float = 100.0  # uncompressed / compressed, per member and for the whole archive
    #: The per-member ratio check applies above this size. A tiny member can legitimately have an odd
    #: ratio (a flat 40x40 BMP, an empty placeholder, deflate's framing around a few bytes) but cannot
    #: hurt: it unpacks to at most this much, and the member cap and the whole-archive ratio bound what
    #: many of them add up to.
    ratio_min_bytes: int = 64 << 10
    #: The whole-archive ratio check applies above this many uncompressed bytes (below it, thousands of
    #: tiny members cost a few seconds of disk writes at most).
    archive_ratio_min_bytes: int = 64 << 20
    min_size: int = 64  # pixels, shortest side as stored (of each half for side-by-side images)
    max_side: int = 1024  # pixels, longest side as stored; larger images are downscaled at ingest
    max_pixels: int = DEFAULT_MAX_PIXELS  # decoded pixels of one image, checked on the header first
    max_report: int = 200  # rejected entries listed in the report (all are counted)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IngestLimits:
        """The limits the operator configured (``ATELIER_DATASET_MAX_FILES``, ``ATELIER_DATASET_MAX_SIDE``,
        ``ATELIER_MAX_IMAGE_PIXELS``), so a deployment tunes them in one place."""
        values: dict[str, Any] = {"max_members": settings.dataset_max_files, "max_side": settings.dataset_max_side,
                                  "max_pixels": settings.max_image_pixels}
        return cls(**{**values, **overrides})


@dataclass
class _Member:
    """One upload entry waiting to be validated. Its bytes stay where they already are (a numbered file
    in the staging directory for an archive member, the request's own buffer for a loose file) until
    :meth:`read`, so only the member being validated is in memory."""

    name: str  # normalised relative posix path, shortened by _strip_common_root
    path: Path | None = None
    data: bytes | None = None
    label: str = ""  # the path as uploaded, for the report

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def release(self) -> None:
        """Drop the staged copy once the member is stored or rejected (disk use stays near one copy)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = self.data = None


@dataclass
class _Report:
    layout: str
    limits: IngestLimits
    rejected: list[dict[str, str]] = field(default_factory=list)
    rejected_count: int = 0
    downscaled: int = 0

    def reject(self, name: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < self.limits.max_report:
            self.rejected.append({"name": name, "reason": reason})


def _size(n: float) -> str:
    """A byte count for a message (``12 KiB``, ``2,048 MiB``)."""
    if n < 1 << 10:
        return f"{n:,.0f} bytes"
    return f"{n / 2**10:,.0f} KiB" if n < 1 << 20 else f"{n / 2**20:,.0f} MiB"


def _short(name: str, limit: int = 80) -> str:
    """An archive member's name for a message: attacker-chosen, so never quoted whole."""
    return name if len(name) <= limit else name[:limit] + "…"


@dataclass
class _Budget:
    """What one upload has used of its limits, shared by its loose files and every archive in it."""

    limits: IngestLimits
    members: int = 0
    bytes: int = 0

    def add_members(self, n: int, label: str, noun: str = "members") -> None:
        self.members += n
        if self.members > self.limits.max_members:
            total = f", {self.members:,} files in all" if self.members != n else ""
            raise UserError(f"{label} has {n:,} {noun}{total}; the limit is {self.limits.max_members:,} "
                            "files per dataset", "file", 413)

    def add_bytes(self, n: int, label: str) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_total_bytes:
            total = f" ({_size(self.bytes)} in all)" if self.bytes != n else ""
            raise UserError(f"{label} unpacks to {_size(n)}{total}; the limit is "
                            f"{_size(self.limits.max_total_bytes)} per dataset", "file", 413)


# ---------------------------------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------------------------------
def _safe_relpath(raw: str) -> str | None:
    """The member path as a clean relative posix path, or None when it could escape (zip-slip)."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        return None
    return "/".join(parts)


def _is_junk(path: str) -> bool:
    return any(part.lower() in _JUNK for part in path.split("/"))


class _RawFiles:
    """Numbered files for archive members inside the staging directory: a name from the archive never
    becomes a path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def new_path(self) -> Path:
        if self.count == 0:
            self.root.mkdir()
        self.count += 1
        return self.root / f"{self.count:06d}"


def _check_archive(infos: list[zipfile.ZipInfo], label: str, limits: IngestLimits, budget: _Budget) -> None:
    """Refuse the whole archive from its directory alone, before a byte is unpacked: too many members,
    too many declared bytes, or a compression ratio no image has (zip bombs are mostly zeros)."""
    budget.add_members(len(infos), label)
    declared = sum(i.file_size for i in infos)
    budget.add_bytes(declared, label)
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise UserError(f"{_short(info.filename)}: compressed {ratio:,.0f} to 1; the limit is "
                            f"{limits.max_ratio:,.0f} to 1 for members over {_size(limits.ratio_min_bytes)}, "
                            "so the upload looks like a zip bomb and was refused", "file", 413)
    compressed = sum(i.compress_size for i in infos)
    ratio = declared / max(compressed, 1)
    if declared > limits.archive_ratio_min_bytes and ratio > limits.max_ratio:
        raise UserError(f"{label}: compressed {ratio:,.0f} to 1 as a whole ({_size(declared)} from "
                        f"{_size(compressed)}); the limit is {limits.max_ratio:,.0f} to 1, so the upload looks "
                        "like a zip bomb and was refused", "file", 413)


def _admit(info: zipfile.ZipInfo, limits: IngestLimits, report: _Report) -> str | None:
    """The member's safe relative path when it is worth unpacking; otherwise None (reported, unless junk)."""
    if info.is_dir():
        return None
    rel = _safe_relpath(info.filename)
    if rel is None:
        report.reject(info.filename, "unsafe path (absolute or containing ..); skipped")
        return None
    if _is_junk(rel):
        return None
    if stat.S_ISLNK(info.external_attr >> 16):
        report.reject(rel, "symbolic link; skipped")
    elif info.flag_bits & 0x1:
        report.reject(rel, "encrypted; skipped")
    elif rel.lower().endswith(".zip"):
        report.reject(rel, "archives inside the archive are not unpacked")
    elif not rel.lower().endswith(IMAGE_SUFFIXES):
        report.reject(rel, f"not an image file ({PurePosixPath(rel).suffix or 'no extension'})")
    elif info.file_size > limits.max_file_bytes:
        report.reject(rel, f"{_size(info.file_size)}; the limit per image is {_size(limits.max_file_bytes)}")
    else:
        return rel
    return None


class _DamagedMember(Exception):
    """Reading a member failed inside the archive (bad CRC, bad deflate data): the member is skipped."""


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes in chunks of at most ``_CHUNK``, CRC-checked. zipfile itself stops at the size a
    member declares and then checks the CRC of what it has, so a member that lies is cut short or called
    damaged without a trace. We let it read one byte further and check the CRC here instead, so that a
    lie shows (the caller refuses the upload) and only real damage is reported as damage."""
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    probe.CRC = None  # type: ignore[assignment]  # zipfile: no CRC to check
    crc = size = 0
    try:
        with zf.open(probe) as src:
            while chunk := src.read(_CHUNK):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
                yield chunk
    except _DAMAGED as exc:
        raise _DamagedMember(exc.__class__.__name__) from exc
    if size != info.file_size or crc != info.CRC:  # cut short, or bytes changed
        raise _DamagedMember("BadZipFile")


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limits: IngestLimits) -> None:
    """Copy one member to ``dest`` chunk by chunk: never more than its declared size (nor the per-file
    limit) is written, and a member that yields more than it declares refuses the whole upload: an
    archive that lies about sizes was built to get past the checks on its directory."""
    allowed = min(info.file_size, limits.max_file_bytes)
    written = 0
    with open(dest, "xb") as out:
        for chunk in _chunks(zf, info):
            written += len(chunk)
            if written > allowed:
                raise UserError(f"{_short(info.filename)}: the archive member unpacks to more than the "
                                f"{_size(info.file_size)} it declares; the upload looks like a zip bomb and "
                                "was refused", "file", 413)
            out.write(chunk)


_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def _declared_entries(fh: BinaryIO) -> int | None:
    """The entry count an archive's end-of-central-directory record declares, read from its last 64 KiB
    without parsing the directory (None when there is no such record: zipfile will then refuse it)."""
    try:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
        fh.seek(0)
    except OSError:
        return None
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 22:
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    locator = tail.rfind(_ZIP64_LOCATOR, 0, at)
    if count == 0xFFFF and locator >= 0 and len(tail) >= locator + 20:
        offset = int.from_bytes(tail[locator + 8:locator + 16], "little")  # of the zip64 EOCD record
        try:
            fh.seek(offset + 32)
            count = int.from_bytes(fh.read(8), "little")
            fh.seek(0)
        except OSError:
            return None
    return count


def _unzip(source: bytes | BinaryIO, label: str, limits: IngestLimits, report: _Report, budget: _Budget,
           raw: _RawFiles) -> Iterator[_Member]:
    """Stream the archive's usable members to numbered staging files, one at a time."""
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    declared = _declared_entries(fh)
    if declared is not None:  # refuse before zipfile builds an object per entry (~0.5 KB each)
        budget.add_members(declared, label)
        budget.members -= declared  # _check_archive counts them again from the parsed directory
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{label} is not a readable zip archive", "file", 415) from exc
    with zf:
        infos = zf.infolist()
        _check_archive(infos, label, limits, budget)
        for info in infos:
            rel = _admit(info, limits, report)
            if rel is None:
                continue
            path = raw.new_path()
            try:
                _stream_member(zf, info, path, limits)
            except _DamagedMember as exc:
                path.unlink(missing_ok=True)
                report.reject(rel, f"damaged archive member ({exc})")
                continue
            yield _Member(rel, path=path)


def _members(upload: Upload, limits: IngestLimits, report: _Report, raw: _RawFiles) -> list[_Member]:
    """Every usable entry of the upload, as members whose bytes are not held in memory (archive members
    are on disk; loose files stay in the request's buffers)."""
    budget = _Budget(limits)
    if isinstance(upload, (bytes, bytearray, memoryview)) or hasattr(upload, "read"):
        return list(_unzip(upload, "the upload", limits, report, budget, raw))  # type: ignore[arg-type]
    budget.add_members(len(upload), "the upload", "files")
    out: list[_Member] = []
    for raw_name, data in upload:
        rel = _safe_relpath(raw_name or "")
        if rel is None:
            report.reject(raw_name, "unsafe path (absolute or containing ..); skipped")
            continue
        if _is_junk(rel):
            continue
        if rel.lower().endswith(".zip"):
            out += _unzip(data, rel, limits, report, budget, raw)
            continue
        if not rel.lower().endswith(IMAGE_SUFFIXES):
            report.reject(rel, f"not an image file ({PurePosixPath(rel).suffix or 'no extension'})")
            continue
        budget.add_bytes(len(data), "the upload")
        if len(data) > limits.max_file_bytes:
            report.reject(rel, f"{_size(len(data))}; the limit per image is {_size(limits.max_file_bytes)}")
            continue
        out.append(_Member(rel, data=data))
    return out


def _strip_common_root(members: list[_Member]) -> None:
    """Drop top-level folders that every member shares (``horse2zebra/trainA/x.jpg`` -> ``trainA/x.jpg``),
    stopping at a folder that is itself meaningful (``trainA``, ``A``, ``train``...)."""
    meaningful = _DOMAIN_A | _DOMAIN_B | _UNUSED_SPLITS | {"train"}
    while members:
        firsts = {m.name.split("/", 1)[0] for m in members}
        if len(firsts) != 1 or any("/" not in m.name for m in members):
            return
        first = firsts.pop()
        if first.lower() in meaningful:
            return
        for m in members:
            m.name = m.name.split("/", 1)[1]


# ---------------------------------------------------------------------------------------------------
# Validation and writing
# ---------------------------------------------------------------------------------------------------
class _Writer:
    """Writes validated images under unique, sanitised names inside the staging directory.

    The staging directory is the unit of atomicity (renamed to ``dest_dir`` only when complete), so the
    images in it are written plainly; names are unique per folder by stem, whatever the extension, so
    training can match A and B by stem and a downscaled ``x.jpg`` (stored as ``x.png``) cannot collide
    with an ``x.png``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: set[str] = set()

    def name_for(self, folder: str, rel: str, suffix: str | None = None) -> str:
        p = PurePosixPath(rel)
        stem = _SAFE.sub("_", "_".join([*p.parts[:-1], p.stem])).strip("._") or "image"
        ext = (suffix or p.suffix).lower()
        candidate, n = stem, 1
        while f"{folder}/{candidate}".lower() in self.used:
            n += 1
            candidate = f"{stem}-{n}"
        self.used.add(f"{folder}/{candidate}".lower())
        return candidate + ext

    def target(self, folder: str, name: str) -> Path:
        d = self.root / folder
        d.mkdir(exist_ok=True)
        return d / name

    def keep(self, folder: str, name: str, m: _Member, data: bytes) -> Path:
        """Store the member's original bytes: a staged archive member is moved, not rewritten."""
        target = self.target(folder, name)
        if m.path is not None:
            os.replace(m.path, target)
            m.path = None
        else:
            target.write_bytes(data)
        return target

    def save_png(self, folder: str, name: str, img: Image.Image) -> Path:
        target = self.target(folder, name)
        img.save(target, format="PNG")
        return target


class _Sizes:
    def __init__(self) -> None:
        self.min: list[int] | None = None
        self.max: list[int] | None = None

    def add(self, w: int, h: int) -> None:
        self.min = [w, h] if self.min is None else [min(self.min[0], w), min(self.min[1], h)]
        self.max = [w, h] if self.max is None else [max(self.max[0], w), max(self.max[1], h)]


@dataclass(frozen=True)
class _Plan:
    """What the header says and what will be stored, decided before anything is decoded."""

    fmt: str
    width: int  # as uploaded
    height: int
    size: tuple[int, int]  # as stored: the whole image, or each half of a side-by-side image
    scale: float  # stored / uploaded (1.0 when the image is small enough)

    @property
    def downscale(self) -> bool:
        return self.scale < 1.0

    def draft_size(self) -> tuple[int, int]:
        """The smallest whole-image size the decoder must deliver (JPEG's draft mode then decodes at 1/2,
        1/4 or 1/8 scale, never below it)."""
        return max(1, math.ceil(self.width * self.scale)), max(1, math.ceil(self.height * self.scale))


def _reason(exc: UserError, label: str) -> str:
    return exc.message.split(": ", 1)[-1] if exc.message.startswith(label) else exc.message


def _plan(m: _Member, data: bytes, limits: IngestLimits, report: _Report, halves: bool = False) -> _Plan | None:
    """Read the header only (format, size, the pixel budget of :func:`core.images.probe_image`) and
    decide the stored size; None (reported) when the image is unusable."""
    try:
        fmt, w, h = probe_image(data, m.label, limits.max_pixels)
    except UserError as exc:
        report.reject(m.label, _reason(exc, m.label))
        return None
    base = (w // 2, h) if halves else (w, h)
    if max(base) <= limits.max_side:
        return _Plan(fmt, w, h, base, 1.0)
    return _Plan(fmt, w, h, scaled_size(*base, limits.max_side), limits.max_side / max(base))


def _big_enough(m: _Member, plan: _Plan, limits: IngestLimits, report: _Report, halves: bool = False) -> bool:
    """The shortest side as stored (after any downscaling) must leave room for training crops."""
    w, h = plan.size
    if min(w, h) >= limits.min_size:
        return True
    what = "each half is " if halves else ""
    if plan.downscale:
        uploaded = f"{plan.width // 2 if halves else plan.width}x{plan.height}"
        what = f"{what}{uploaded} pixels, {w}x{h} once downscaled to {limits.max_side} on the longest side"
    else:
        what = f"{what}{w}x{h} pixels"
    report.reject(m.label, f"{what}; the shortest side must be at least {limits.min_size}")
    return False


def _decode_reduced_jpeg(data: bytes, label: str, size: tuple[int, int]) -> Image.Image:
    """:func:`core.images.decode_image` for a JPEG that will be downscaled anyway: the decoder's draft mode
    scales in the DCT domain (1/2 to 1/8) while decoding, so a 60-megapixel photo costs a fraction of the
    time and memory. The caller has probed the header (pixel budget) already."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", size)
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{label}: the image file is damaged or truncated", label, 422) from exc


def _decode(m: _Member, data: bytes, plan: _Plan, limits: IngestLimits, report: _Report) -> Image.Image | None:
    """Decode fully (a truncated file fails here, not inside training); None (reported) when it does not."""
    try:
        if plan.downscale and plan.fmt == "JPEG":
            return _decode_reduced_jpeg(data, m.label, plan.draft_size())
        return decode_image(data, m.label, limits.max_pixels)
    except UserError as exc:
        report.reject(m.label, _reason(exc, m.label))
        return None


def _shrink(img: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Downscale (a region of) ``img`` to ``size`` with Lanczos. ``reducing_gap`` lets PIL first
    ``reduce()`` by an integer factor (an exact box average, fast) and finish with Lanczos: at 3.0 the
    result is indistinguishable from a pure Lanczos and several times faster for large reductions."""
    return img.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _store(m: _Member, folder: str, naming: Callable[[str], str], writer: _Writer, limits: IngestLimits,
           report: _Report, check_min: bool = True) -> tuple[_Plan, Path] | None:
    """Validate one image and store it: as uploaded when it is small enough, else downscaled to
    ``max_side`` as PNG. ``naming(suffix)`` gives the stored file name. None (reported) when unusable.
    The member's bytes are released either way, so the next member starts from an empty slate."""
    try:
        data = m.read()
        plan = _plan(m, data, limits, report)
        if plan is None or (check_min and not _big_enough(m, plan, limits, report)):
            return None
        img = _decode(m, data, plan, limits, report)
        if img is None:
            return None
        if not plan.downscale:
            return plan, writer.keep(folder, naming(PurePosixPath(m.name).suffix), m, data)
        report.downscaled += 1
        return plan, writer.save_png(folder, naming(".png"), _shrink(img, plan.size))
    finally:
        m.release()


def _half(img: Image.Image, plan: _Plan, i: int) -> Image.Image:
    """Half ``i`` (0: A, the left; 1: B, the right) of a side-by-side image at its stored size. The split
    is at the uploaded half width, mapped into the decoded image (a JPEG may have been decoded smaller)."""
    half = plan.width // 2
    if not plan.downscale:
        return img.crop((i * half, 0, (i + 1) * half, plan.height))
    sx = img.width / plan.width
    return _shrink(img, plan.size, box=(i * half * sx, 0, (i + 1) * half * sx, img.height))


def _store_halves(m: _Member, writer: _Writer, limits: IngestLimits, report: _Report) -> _Plan | None:
    """Validate a side-by-side A|B image and store its halves (as PNG, each at most ``max_side``)."""
    try:
        data = m.read()
        plan = _plan(m, data, limits, report, halves=True)
        if plan is None or not _big_enough(m, plan, limits, report, halves=True):
            return None
        img = _decode(m, data, plan, limits, report)
        if img is None:
            return None
        name = writer.name_for("A", m.name, ".png")
        writer.save_png("A", name, _half(img, plan, 0))
        writer.save_png("B", name, _half(img, plan, 1))
        report.downscaled += plan.downscale
        return plan
    finally:
        m.release()


def _domain(first: str) -> str | None:
    low = first.lower()
    return "A" if low in _DOMAIN_A else ("B" if low in _DOMAIN_B else None)


def _ingest_unpaired(members: list[_Member], writer: _Writer, limits: IngestLimits, report: _Report) -> dict[str, Any]:
    counts, sizes = {"A": 0, "B": 0}, _Sizes()
    for m in members:
        first, _, rest = m.name.partition("/")
        side = _domain(first) if rest else None
        if side is None:
            why = ("test/validation splits are not used for training" if first.lower() in _UNUSED_SPLITS and rest
                   else "not inside a trainA/ (or A/) or trainB/ (or B/) folder")
            report.reject(m.label, why)
            m.release()
            continue
        folder = f"train{side}"
        stored = _store(m, folder, partial(writer.name_for, folder, rest), writer, limits, report)
        if stored is not None:
            counts[side] += 1
            sizes.add(*stored[0].size)
    for side in ("A", "B"):
        if counts[side] == 0:
            raise _nothing_usable(f"no usable images for domain {side} (a train{side}/ or {side}/ folder)", report)
    return {"counts": counts, "image_size": {"min": sizes.min, "max": sizes.max}}


def _store_pair(ma: _Member, mb: _Member, writer: _Writer, limits: IngestLimits, report: _Report) -> _Plan | None:
    """Validate and store one A/B pair, one image in memory at a time: both headers first (readable, same
    size, big enough), then A is stored, then B; if B turns out damaged, A's file is removed again."""
    try:
        pa, pb = _plan(ma, ma.read(), limits, report), _plan(mb, mb.read(), limits, report)
        if pa is None or pb is None:
            if pa is not None or pb is not None:
                report.reject((ma if pa is not None else mb).label, "its partner is unreadable")
            return None
        if (pa.width, pa.height) != (pb.width, pb.height):
            report.reject(ma.label, f"A is {pa.width}x{pa.height} but its B is {pb.width}x{pb.height}; "
                                    "the two sides of a pair must have the same size")
            return None
        if not _big_enough(ma, pa, limits, report):
            return None
        stored_a = _store(ma, "A", partial(writer.name_for, "A", ma.name.partition("/")[2]), writer, limits,
                          report, check_min=False)
        if stored_a is None:
            report.reject(mb.label, "its partner is unreadable")
            return None
        stem = stored_a[1].stem
        if _store(mb, "B", lambda suffix: stem + suffix, writer, limits, report, check_min=False) is None:
            stored_a[1].unlink()
            report.downscaled -= stored_a[0].downscale
            report.reject(ma.label, "its partner is unreadable")
            return None
        return stored_a[0]
    finally:
        ma.release()
        mb.release()


def _ingest_paired_folders(members: list[_Member], writer: _Writer, limits: IngestLimits,
                           report: _Report) -> dict[str, Any]:
    sides: dict[str, dict[str, _Member]] = {"A": {}, "B": {}}
    for m in members:
        first, _, rest = m.name.partition("/")
        side = _domain(first) if rest else None
        if side is None:
            report.reject(m.label, "not inside the A/ or B/ folder")
            continue
        key = str(PurePosixPath(rest).with_suffix("")).lower()
        if key in sides[side]:
            report.reject(m.label, f"another file in {first}/ has the same name without extension")
            continue
        sides[side][key] = m
    pairs, sizes = 0, _Sizes()
    for key, ma in sorted(sides["A"].items()):
        mb = sides["B"].pop(key, None)
        if mb is None:
            report.reject(ma.label, "no image with the same name in B/ (pairs are matched by file name)")
            continue
        plan = _store_pair(ma, mb, writer, limits, report)
        if plan is not None:
            pairs += 1
            sizes.add(*plan.size)
    for mb in sides["B"].values():
        report.reject(mb.label, "no image with the same name in A/ (pairs are matched by file name)")
    if pairs == 0:
        raise _nothing_usable("no complete A/B pairs", report)
    return {"counts": {"pairs": pairs}, "image_size": {"min": sizes.min, "max": sizes.max}, "source": "folders"}


def _ingest_side_by_side(members: list[_Member], writer: _Writer, limits: IngestLimits,
                         report: _Report) -> dict[str, Any]:
    pairs, sizes = 0, _Sizes()
    for m in members:
        first = m.name.split("/", 1)[0].lower()
        if "/" in m.name and first in _UNUSED_SPLITS:
            report.reject(m.label, "test/validation splits are not used for training")
            m.release()
            continue
        plan = _store_halves(m, writer, limits, report)
        if plan is not None:
            pairs += 1
            sizes.add(*plan.size)
    if pairs == 0:
        raise _nothing_usable("no usable side-by-side A|B images", report)
    return {"counts": {"pairs": pairs}, "image_size": {"min": sizes.min, "max": sizes.max}, "source": "side_by_side"}


def _nothing_usable(what: str, report: _Report) -> UserError:
    detail = ""
    if report.rejected:
        r = report.rejected[0]
        detail = f"; {report.rejected_count} files were rejected, e.g. {r['name']}: {r['reason']}"
    return UserError(f"the upload has {what}{detail}", "file", 422)


def ingest_dataset(upload: Upload, dest_dir: Path, layout: str, limits: IngestLimits | None = None) -> dict[str, Any]:
    """Unpack, validate and store an uploaded dataset in ``dest_dir`` (which must not exist yet).

    Returns the report ``{"layout", "counts": {"A", "B"} | {"pairs"}, "image_size": {"min": [w, h],
    "max": [w, h]}, "downscaled", "rejected": [{"name", "reason"}], "rejected_count"}`` (paired adds
    ``"source": "folders" | "side_by_side"``); sizes are as stored, ``downscaled`` counts the uploaded
    images that were larger than ``limits.max_side``. Raises :class:`UserError` (field ``file``): 413 for
    a zip bomb or an upload over the limits, 415 for a non-zip, 422 when nothing usable remains (the
    message names the first rejection). ``layout`` errors name the field ``layout``. On any error nothing
    is left behind.
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}", "layout", 422)
    limits = limits or IngestLimits()
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise ValueError(f"{dest_dir} already exists and is not empty")
    report = _Report(layout, limits)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=dest_dir.parent))
    try:
        members = _members(upload, limits, report, _RawFiles(staging / _RAW))
        _strip_common_root(members)
        writer = _Writer(staging)
        if layout == "unpaired":
            result = _ingest_unpaired(members, writer, limits, report)
        elif any(_domain(m.name.split("/", 1)[0]) for m in members if "/" in m.name):
            result = _ingest_paired_folders(members, writer, limits, report)
        else:
            result = _ingest_side_by_side(members, writer, limits, report)
        shutil.rmtree(staging / _RAW, ignore_errors=True)  # members that were never stored (unmatched)
        out = {"layout": layout, **result, "downscaled": report.downscaled, "rejected": report.rejected,
               "rejected_count": report.rejected_count}
        write_atomically(staging / "dataset.json", lambda fh: fh.write(json.dumps(out, indent=2).encode()))
        if dest_dir.exists():
            dest_dir.rmdir()
        os.replace(staging, dest_dir)
        return out
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

# ---------------------------------------------------------------------------------------------------
# The built-in demo dataset: photos <-> the same kind of photos with a fixed colour grade
# ---------------------------------------------------------------------------------------------------
#: A warm "film" grade: a channel mix towards orange highlights and teal-free shadows, lifted blacks
#: and a gentle S-curve. Per-pixel and deterministic, so both CycleGAN and pix2pix can learn it.
_GRADE_MATRIX = np.array([[0.95, 0.20, 0.00],
                          [0.10, 0.82, 0.08],
                          [0.00, 0.18, 0.70]], dtype=np.float32)


def demo_grade(img: Image.Image) -> Image.Image:
    """The demo dataset's colour grade (domain B = ``demo_grade(domain A)``)."""
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    y = x @ _GRADE_MATRIX.T
    y = 0.06 + 0.9 * y  # lifted blacks, softened whites
    y = y + 0.35 * y * (1 - y) * (y - 0.5)  # gentle S-curve
    return Image.fromarray((np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _random_crops(img: Image.Image, n: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    out = []
    short = min(img.size)
    for _ in range(n):
        side = int(rng.integers(max(size // 2, short // 2), short + 1))  # crops of 50-100% of the short side
        x = int(rng.integers(0, img.width - side + 1))
        y = int(rng.integers(0, img.height - side + 1))
        out.append(img.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC))
    return out


def build_demo_dataset(source_images: Sequence[Path], dest_dir: Path, layout: str = "unpaired",
                       size: int = 256, crops_per_image: int = 8, seed: int = 0) -> dict[str, Any]:
    """Build the one-click demo dataset from bundled photos: A = photo crops, B = graded crops.

    ``unpaired``: B comes from *other* random crops than A (as in real unpaired data); ``paired``: B is
    exactly the graded A. Deterministic for a given ``seed``. Returns the same report as
    :func:`ingest_dataset` (it goes through it, so the result is validated the same way).
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}", "layout")
    rng = np.random.default_rng(seed)
    files: list[tuple[str, bytes]] = []
    for path in source_images:
        photo = decode_image(Path(path).read_bytes(), Path(path).name)
        stem = _SAFE.sub("_", Path(path).stem)
        crops_a = _random_crops(photo, crops_per_image, size, rng)
        crops_b = crops_a if layout == "paired" else _random_crops(photo, crops_per_image, size, rng)
        for i, (a, b) in enumerate(zip(crops_a, crops_b)):
            files.append((f"A/{stem}_{i:02d}.png", encode_png(a)))
            files.append((f"B/{stem}_{i:02d}.png", encode_png(demo_grade(b))))
    if not files:
        raise UserError("the demo dataset needs at least one source photo", "file")
    return ingest_dataset(files, dest_dir, layout, IngestLimits(min_size=min(64, size)))
