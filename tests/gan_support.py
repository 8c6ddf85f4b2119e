"""Helpers shared by the GAN tests: bundled photos, tiny datasets, a job context with resources."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.kinds.context import LocalJobContext

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTO_DIR = REPO_ROOT / "web" / "static" / "examples" / "content"


def photo_paths() -> list[Path]:
    """The shippable example photos that live in the repository (never skipped: they must exist)."""
    paths = sorted(p for p in PHOTO_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert len(paths) >= 4, f"expected the bundled example photos in {PHOTO_DIR}"
    return paths


def small_photos(short_side: int) -> list[Image.Image]:
    out = []
    for p in photo_paths():
        im = Image.open(p).convert("RGB")
        s = short_side / min(im.size)
        out.append(im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC))
    return out


def write_images(folder: Path, images: list[Image.Image], prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"{prefix}{i:03d}.png"
        im.save(p)
        paths.append(p)
    return paths


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def tiny_unpaired_dir(root: Path, short_side: int = 48) -> Path:
    """``root/trainA`` (photos) and ``root/trainB`` (the same photos, R and B swapped)."""
    photos = small_photos(short_side)
    write_images(root / "trainA", photos, "a")
    write_images(root / "trainB", [Image.fromarray(np.asarray(p)[:, :, ::-1].copy()) for p in photos], "b")
    return root


def tiny_paired_dir(root: Path, short_side: int = 48) -> Path:
    """``root/A`` and ``root/B`` with matching names (B = A with R and B swapped)."""
    photos = small_photos(short_side)
    write_images(root / "A", photos, "p")
    write_images(root / "B", [Image.fromarray(np.asarray(p)[:, :, ::-1].copy()) for p in photos], "p")
    return root


class ResourceContext(LocalJobContext):
    """A local job context whose datasets/models are plain directories and whose registered models are
    copied next to the outputs (what the job layer does with storage and rows)."""

    def __init__(self, params: Mapping[str, Any], out_dir: Path,
                 resources: Mapping[tuple[str, str], Path] | None = None, **kw: Any) -> None:
        super().__init__(params, kw.pop("inputs", []), out_dir, **kw)
        self.resources = dict(resources or {})
        self.registered: list[dict[str, Any]] = []

    def resource_path(self, table: str, resource_id: str) -> Path:
        return self.resources[(table, resource_id)]

    def register_model(self, name: str, kind: str, source_dir: Path, meta: Mapping[str, Any]) -> str:
        model_id = f"model-{len(self.registered) + 1}"
        dest = self.out_dir / "registered" / model_id
        shutil.copytree(source_dir, dest)
        self.registered.append({"id": model_id, "name": name, "kind": kind, "dir": dest, "meta": dict(meta)})
        self.resources[("models", model_id)] = dest
        return model_id
