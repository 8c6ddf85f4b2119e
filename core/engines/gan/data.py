"""Training data: folders of images -> batches of uint8 tensors, reproducible from (seed, epoch, position).

Randomness here is *stateless*: the order of an epoch and the crop/flip of each sample are drawn from
``numpy.random.default_rng([seed, epoch, ...])``. So a resumed run only needs the epoch and the position
inside it to see exactly the batches an uninterrupted run would, and data loading cannot disturb the
global RNG streams that dropout uses.

The deterministic part of preprocessing (decode + resize) is cached in memory up to a byte budget, so
small datasets are decoded once; only the random crop and flip run per step.

Preprocessing follows the reference's ``--preprocess`` options:
- ``resize_and_crop``: resize to load_size x load_size (aspect ignored, as the reference does), random crop;
- ``crop``: random crop of the original (images smaller than crop_size are first scaled up to it);
- ``scale_width``: width to load_size keeping the aspect (height at least crop_size), no crop;
- ``scale_width_and_crop``: the same, then a random crop;
- ``none``: the original, rounded to a multiple of 4.
Images of one batch must share a size; with ``scale_width``/``none`` and batch_size > 1 a batch is
centre-cropped to its smallest member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import UserError
from core.images import IMAGE_SUFFIXES, load_image

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
DEFAULT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Preprocess:
    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {self.mode!r}; expected one of {', '.join(PREPROCESS_MODES)}")
        if self.mode in ("resize_and_crop", "scale_width_and_crop") and self.load_size < self.crop_size:
            raise UserError(f"load_size ({self.load_size}) must be at least crop_size ({self.crop_size})", "load_size")

    @property
    def crops(self) -> bool:
        return self.mode in ("resize_and_crop", "crop", "scale_width_and_crop")

    def prepare(self, img: Image.Image) -> Image.Image:
        """The deterministic part: the resize that does not depend on random numbers (cacheable)."""
        w, h = img.size
        if self.mode == "resize_and_crop":
            size = (self.load_size, self.load_size)
        elif self.mode == "crop":
            s = max(1.0, self.crop_size / min(w, h))
            size = (max(self.crop_size, round(w * s)), max(self.crop_size, round(h * s)))
        elif self.mode in ("scale_width", "scale_width_and_crop"):
            size = (self.load_size, max(self.crop_size, round(self.load_size * h / w)))
        else:  # none
            size = (w, h)
        if self.mode in ("scale_width", "none"):  # the generators need multiples of 4
            size = (max(4, round(size[0] / 4) * 4), max(4, round(size[1] / 4) * 4))
        return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) uint8."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_model_range(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the reference's ToTensor + Normalize((0.5,)*3, (0.5,)*3)."""
    return u8.float().div_(127.5).sub_(1.0)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path; hidden files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a directory", "dataset")
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def fingerprint(paths: Sequence[Path | None]) -> str:
    """Names and sizes of the files a run trains on: a resumed run refuses a changed dataset."""
    h = hashlib.sha256()
    for p in paths:
        h.update(b"-" if p is None else f"{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


class PreparedImages:
    """Images decoded and prepared on first use, kept in memory while the byte budget allows."""

    def __init__(self, load: Callable[[int], torch.Tensor], count: int, budget_bytes: int) -> None:
        self._load = load
        self.count = count
        self._cache: dict[int, torch.Tensor] = {}
        self._budget = budget_bytes

    def __getitem__(self, i: int) -> torch.Tensor:
        t = self._cache.get(i)
        if t is None:
            t = self._load(i)
            if t.numel() <= self._budget:
                self._cache[i] = t
                self._budget -= t.numel()
        return t


def _sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, 1])


def _augment(images: Sequence[torch.Tensor], pre: Preprocess, rng: np.random.Generator) -> list[torch.Tensor]:
    """Random crop and flip with *one* set of parameters for all ``images`` (the two sides of a pair)."""
    _, h, w = images[0].shape
    out = list(images)
    if pre.crops:
        cs = pre.crop_size
        y = int(rng.integers(0, h - cs + 1))
        x = int(rng.integers(0, w - cs + 1))
        out = [t[:, y:y + cs, x:x + cs] for t in out]
    if pre.flip and rng.random() > 0.5:
        out = [t.flip(-1) for t in out]
    return out


def _collate(samples: list[torch.Tensor]) -> torch.Tensor:
    """Stack (3, H, W) uint8 tensors, centre-cropping to the smallest size when they differ."""
    h = min(t.shape[1] for t in samples)
    w = min(t.shape[2] for t in samples)
    out = []
    for t in samples:
        y, x = (t.shape[1] - h) // 2, (t.shape[2] - w) // 2
        out.append(t[:, y:y + h, x:x + w])
    return torch.stack(out, 0).contiguous()


def _load_prepared(path: Path, pre: Preprocess) -> torch.Tensor:
    return to_uint8_tensor(pre.prepare(load_image(str(path), field=path.name)))


class UnpairedData:
    """Two unaligned image sets. An epoch walks a permutation of the larger set; A cycles through a
    shuffled order and each B is drawn at random, as the reference's unaligned dataset does."""

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], pre: Preprocess, seed: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not files_a or not files_b:
            raise UserError("training needs at least one image in A and one in B", "dataset")
        self.files_a, self.files_b, self.pre, self.seed = list(files_a), list(files_b), pre, seed
        self.a = PreparedImages(lambda i: _load_prepared(self.files_a[i], pre), len(self.files_a), cache_bytes // 2)
        self.b = PreparedImages(lambda i: _load_prepared(self.files_b[i], pre), len(self.files_b), cache_bytes // 2)

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def fingerprint(self) -> str:
        return fingerprint([*self.files_a, None, *self.files_b])

    def _epoch_indices(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0])
        order = rng.permutation(len(self))
        return order % len(self.files_a), rng.integers(0, len(self.files_b), size=len(self))

    def batch(self, epoch: int, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start .. start+size`` of ``epoch`` -> (A, B), each (N, 3, h, w) uint8."""
        ia, ib = self._epoch_indices(epoch)
        a_list, b_list = [], []
        for pos in range(start, min(start + size, len(self))):
            rng = _sample_rng(self.seed, epoch, pos)
            a_list += _augment([self.a[int(ia[pos])]], self.pre, rng)
            b_list += _augment([self.b[int(ib[pos])]], self.pre, rng)
        return _collate(a_list), _collate(b_list)


class PairedData:
    """Aligned pairs: ``(a_path, b_path)``, or ``(ab_path, None)`` for an A|B side-by-side image.

    Both sides get the same resize, crop and flip, so pixels stay in correspondence. A B image whose size
    differs from its A is resized to it.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path | None]], pre: Preprocess, seed: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not pairs:
            raise UserError("training needs at least one complete A/B pair", "dataset")
        self.pairs, self.pre, self.seed = list(pairs), pre, seed
        self.images = PreparedImages(self._load_pair, len(self.pairs), cache_bytes)

    def _load_pair(self, i: int) -> torch.Tensor:
        a_path, b_path = self.pairs[i]
        a = load_image(str(a_path), field=a_path.name)
        if b_path is None:  # side by side: left half A, right half B
            w2 = a.width // 2
            a, b = a.crop((0, 0, w2, a.height)), a.crop((w2, 0, 2 * w2, a.height))
        else:
            b = load_image(str(b_path), field=b_path.name)
            if b.size != a.size:
                b = b.resize(a.size, Image.Resampling.BICUBIC)
        return torch.stack([to_uint8_tensor(self.pre.prepare(a)), to_uint8_tensor(self.pre.prepare(b))], 0)

    def __len__(self) -> int:
        return len(self.pairs)

    def fingerprint(self) -> str:
        return fingerprint([p for pair in self.pairs for p in pair])

    def batch(self, epoch: int, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self))
        a_list, b_list = [], []
        for pos in range(start, min(start + size, len(self))):
            ab = self.images[int(order[pos])]
            a, b = _augment([ab[0], ab[1]], self.pre, _sample_rng(self.seed, epoch, pos))
            a_list.append(a)
            b_list.append(b)
        return _collate(a_list), _collate(b_list)


# ---------------------------------------------------------------------------------------------------
# Finding the images of a dataset directory
# ---------------------------------------------------------------------------------------------------
UNPAIRED_DIRS = (("trainA", "trainB"), ("A", "B"))


def unpaired_files(root: Path) -> tuple[list[Path], list[Path]]:
    """``trainA/`` + ``trainB/`` (or ``A/`` + ``B/``) under ``root``."""
    root = Path(root)
    for da, db in UNPAIRED_DIRS:
        if (root / da).is_dir() and (root / db).is_dir():
            return list_images(root / da), list_images(root / db)
    raise UserError(f"{root} has no trainA/ + trainB/ (or A/ + B/) folders", "dataset")


def match_pairs(a_files: Sequence[Path], b_files: Sequence[Path]) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Pair files by name without extension; returns (pairs, names without a partner)."""
    b_by_stem = {p.stem: p for p in b_files}
    pairs, missing = [], []
    for a in a_files:
        b = b_by_stem.pop(a.stem, None)
        if b is None:
            missing.append(f"A/{a.name}")
        else:
            pairs.append((a, b))
    missing += [f"B/{b.name}" for b in b_by_stem.values()]
    return pairs, missing


def paired_files(root: Path) -> list[tuple[Path, Path | None]]:
    """``A/`` + ``B/`` with matching names (what ingest writes), or side-by-side A|B images in ``root``."""
    root = Path(root)
    for da, db in (("A", "B"), ("trainA", "trainB")):
        if (root / da).is_dir() and (root / db).is_dir():
            pairs, missing = match_pairs(list_images(root / da), list_images(root / db))
            if missing:
                raise UserError(f"{len(missing)} images have no partner, e.g. {missing[0]}", "dataset")
            return pairs
    folder = root / "train" if (root / "train").is_dir() else root
    return [(p, None) for p in list_images(folder)]
