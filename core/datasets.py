"""Dataset uploads for CycleGAN and pix2pix: unpack safely, validate, and store in one canonical layout.

An upload is a zip archive (bytes) or several files (``(filename, bytes)`` pairs, where a ``.zip`` among
them is unpacked too). What comes out in ``dest_dir``:

- layout ``unpaired``: ``trainA/`` and ``trainB/`` (accepted in the upload as ``trainA/ trainB/`` or
  ``A/ B/``, any letter case, optionally inside one top-level folder);
- layout ``paired``: ``A/`` and ``B/`` holding files with the same names, from either two folders with
  matching file names (``A/ B/`` or ``trainA/ trainB/``, matched by name without extension) or from
  side-by-side ``A|B`` images (the reference's aligned format), which are split in half here;
- ``dataset.json``: the report returned by :func:`ingest_dataset`.

Uploads are untrusted. Guards, in the order they apply:
- archive level (the whole upload is refused, HTTP 413): too many members, too many uncompressed bytes
  in total, or a member whose compression ratio is implausible for an image (a zip bomb);
- member level (the member is skipped and reported): absolute paths, ``..`` components, drive letters
  (zip-slip), symbolic links, encrypted or nested archives, non-image files, images that do not decode
  (checked by :mod:`core.images`, which also refuses decompression bombs), images below the minimum
  size, pairs with a missing or differently sized partner.
Nothing is ever written to a path taken from the archive: stored names are rebuilt from a sanitised
form, and files are written to a staging directory that is renamed to ``dest_dir`` only on success.
Nothing here imports torch; the web process calls it directly.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Union

import numpy as np
from PIL import Image

from core.errors import UserError
from core.images import DEFAULT_MAX_PIXELS, decode_image, encode_png

LAYOUTS = ("unpaired", "paired")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
Upload = Union[bytes, Sequence[tuple[str, bytes]]]

_DOMAIN_A = {"traina", "a"}
_DOMAIN_B = {"trainb", "b"}
_UNUSED_SPLITS = {"testa", "testb", "vala", "valb", "test", "val"}
_JUNK = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class IngestLimits:
    max_members: int = 20_000
    max_total_bytes: int = 2 << 30  # uncompressed, whole upload
    max_file_bytes: int = 64 << 20  # one member
    max_ratio: float = 100.0  # uncompressed / compressed, for members above ratio_min_bytes
    ratio_min_bytes: int = 1 << 20
    min_size: int = 64  # pixels, shortest side (of each half for side-by-side images)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_report: int = 200  # rejected entries listed in the report (all are counted)


@dataclass
class _Member:
    name: str  # normalised relative posix path, shortened by _strip_common_root
    data: bytes
    label: str = ""  # the path as uploaded, for the report

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclass
class _Report:
    layout: str
    limits: IngestLimits
    rejected: list[dict[str, str]] = field(default_factory=list)
    rejected_count: int = 0

    def reject(self, name: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < self.limits.max_report:
            self.rejected.append({"name": name, "reason": reason})


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


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read a member, never more than its declared size (and ``limit``), whatever the stream says."""
    out = bytearray()
    with zf.open(info) as fh:
        while chunk := fh.read(1 << 20):
            out += chunk
            if len(out) > min(info.file_size, limit):
                raise UserError(f"{info.filename}: the archive member is larger than it declares; "
                                "the upload looks like a zip bomb and was refused", "file", 413)
    return bytes(out)


def _unzip(data: bytes, label: str, limits: IngestLimits, report: _Report, budget: list[int]) -> Iterator[_Member]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{label} is not a readable zip archive", "file", 415) from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise UserError(f"{label} has {len(infos):,} members; the limit is {limits.max_members:,}", "file", 413)
        declared = sum(i.file_size for i in infos)
        if declared > budget[0]:
            raise UserError(f"{label} unpacks to {declared / 2**20:,.0f} MiB; the limit is "
                            f"{limits.max_total_bytes / 2**20:,.0f} MiB", "file", 413)
        for info in infos:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
                raise UserError(f"{info.filename}: compressed {ratio:,.0f} to 1, "
                                "implausible for an image; the upload looks like a zip bomb and was refused",
                                "file", 413)
        for info in infos:
            if info.is_dir():
                continue
            rel = _safe_relpath(info.filename)
            if rel is None:
                report.reject(info.filename, "unsafe path (absolute or containing ..); skipped")
                continue
            if _is_junk(rel):
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                report.reject(rel, "symbolic link; skipped")
                continue
            if info.flag_bits & 0x1:
                report.reject(rel, "encrypted; skipped")
                continue
            if rel.lower().endswith(".zip"):
                report.reject(rel, "archives inside the archive are not unpacked")
                continue
            if not rel.lower().endswith(IMAGE_SUFFIXES):
                report.reject(rel, f"not an image file ({PurePosixPath(rel).suffix or 'no extension'})")
                continue
            if info.file_size > limits.max_file_bytes:
                report.reject(rel, f"{info.file_size / 2**20:.0f} MiB; the limit per image is "
                                   f"{limits.max_file_bytes / 2**20:.0f} MiB")
                continue
            try:
                content = _read_member(zf, info, limits.max_file_bytes)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                report.reject(rel, f"damaged archive member ({exc.__class__.__name__})")
                continue
            budget[0] -= len(content)
            yield _Member(rel, content)


def _members(upload: Upload, limits: IngestLimits, report: _Report) -> list[_Member]:
    budget = [limits.max_total_bytes]
    if isinstance(upload, (bytes, bytearray, memoryview)):
        return list(_unzip(bytes(upload), "the upload", limits, report, budget))
    if len(upload) > limits.max_members:
        raise UserError(f"{len(upload):,} files; the limit is {limits.max_members:,}", "file", 413)
    out: list[_Member] = []
    for raw_name, data in upload:
        rel = _safe_relpath(raw_name or "")
        if rel is None:
            report.reject(raw_name, "unsafe path (absolute or containing ..); skipped")
            continue
        if _is_junk(rel):
            continue
        if rel.lower().endswith(".zip"):
            out += _unzip(data, rel, limits, report, budget)
            continue
        if not rel.lower().endswith(IMAGE_SUFFIXES):
            report.reject(rel, f"not an image file ({PurePosixPath(rel).suffix or 'no extension'})")
            continue
        budget[0] -= len(data)
        if budget[0] < 0:
            raise UserError(f"the upload is larger than {limits.max_total_bytes / 2**20:,.0f} MiB", "file", 413)
        out.append(_Member(rel, data))
    if len(out) > limits.max_members:
        raise UserError(f"{len(out):,} files; the limit is {limits.max_members:,}", "file", 413)
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
    """Writes validated images under unique, sanitised names inside a staging directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: set[str] = set()

    def name_for(self, folder: str, rel: str, suffix: str | None = None) -> str:
        p = PurePosixPath(rel)
        stem = _SAFE.sub("_", "_".join([*p.parts[:-1], p.stem])).strip("._") or "image"
        ext = (suffix or p.suffix).lower()
        candidate, n = f"{stem}{ext}", 1
        while f"{folder}/{candidate}".lower() in self.used:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        self.used.add(f"{folder}/{candidate}".lower())
        return candidate

    def write(self, folder: str, name: str, data: bytes) -> None:
        d = self.root / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)


class _Sizes:
    def __init__(self) -> None:
        self.min: list[int] | None = None
        self.max: list[int] | None = None

    def add(self, w: int, h: int) -> None:
        self.min = [w, h] if self.min is None else [min(self.min[0], w), min(self.min[1], h)]
        self.max = [w, h] if self.max is None else [max(self.max[0], w), max(self.max[1], h)]


def _decode(m: _Member, limits: IngestLimits, report: _Report) -> Image.Image | None:
    try:
        return decode_image(m.data, m.label, limits.max_pixels)
    except UserError as exc:
        reason = exc.message.split(": ", 1)[-1] if exc.message.startswith(m.label) else exc.message
        report.reject(m.label, reason)
        return None


def _big_enough(m: _Member, w: int, h: int, limits: IngestLimits, report: _Report, what: str = "") -> bool:
    if min(w, h) < limits.min_size:
        report.reject(m.label, f"{what}{w}x{h} pixels; the shortest side must be at least {limits.min_size}")
        return False
    return True


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
            continue
        img = _decode(m, limits, report)
        if img is None or not _big_enough(m, img.width, img.height, limits, report):
            continue
        folder = f"train{side}"
        writer.write(folder, writer.name_for(folder, rest), m.data)
        counts[side] += 1
        sizes.add(img.width, img.height)
    for side in ("A", "B"):
        if counts[side] == 0:
            raise _nothing_usable(f"no usable images for domain {side} (a train{side}/ or {side}/ folder)", report)
    return {"counts": counts, "image_size": {"min": sizes.min, "max": sizes.max}}


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
        ia, ib = _decode(ma, limits, report), _decode(mb, limits, report)
        if ia is None or ib is None:
            if ia is not None or ib is not None:
                report.reject((ma if ia is not None else mb).label, "its partner is unreadable")
            continue
        if ia.size != ib.size:
            report.reject(ma.label, f"A is {ia.width}x{ia.height} but its B is {ib.width}x{ib.height}; "
                                   "the two sides of a pair must have the same size")
            continue
        if not _big_enough(ma, ia.width, ia.height, limits, report):
            continue
        name = writer.name_for("A", ma.name.partition("/")[2])
        stem = PurePosixPath(name).stem
        writer.write("A", name, ma.data)
        writer.write("B", stem + PurePosixPath(mb.name).suffix.lower(), mb.data)
        pairs += 1
        sizes.add(ia.width, ia.height)
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
            continue
        img = _decode(m, limits, report)
        if img is None:
            continue
        half = img.width // 2
        if not _big_enough(m, half, img.height, limits, report, what="each half is "):
            continue
        name = writer.name_for("A", m.name, ".png")
        writer.write("A", name, encode_png(img.crop((0, 0, half, img.height))))
        writer.write("B", name, encode_png(img.crop((half, 0, 2 * half, img.height))))
        pairs += 1
        sizes.add(half, img.height)
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
    "max": [w, h]}, "rejected": [{"name", "reason"}], "rejected_count"}`` (paired adds ``"source":
    "folders" | "side_by_side"``). Raises :class:`UserError` (field ``file``): 413 for a zip bomb or an
    upload over the limits, 415 for a non-zip, 422 when nothing usable remains (the message names the
    first rejection). ``layout`` errors name the field ``layout``.
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}", "layout", 422)
    limits = limits or IngestLimits()
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise ValueError(f"{dest_dir} already exists and is not empty")
    report = _Report(layout, limits)
    members = _members(upload, limits, report)
    _strip_common_root(members)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=dest_dir.parent))
    try:
        writer = _Writer(staging)
        if layout == "unpaired":
            result = _ingest_unpaired(members, writer, limits, report)
        elif any(_domain(m.name.split("/", 1)[0]) for m in members if "/" in m.name):
            result = _ingest_paired_folders(members, writer, limits, report)
        else:
            result = _ingest_side_by_side(members, writer, limits, report)
        out = {"layout": layout, **result, "rejected": report.rejected, "rejected_count": report.rejected_count}
        (staging / "dataset.json").write_text(json.dumps(out, indent=2))
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
