"""Sample grids: rows of images in [-1, 1] -> one PIL image, for previews and the final sample output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (..., 3, H, W) -> uint8 [0, 255], rounding (the reference truncates, which darkens
    every pixel by half a level on average)."""
    return ((x.detach().float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    return Image.fromarray(to_uint8(x).cpu().permute(1, 2, 0).contiguous().numpy(), "RGB")


def grid(rows: Sequence[Sequence[torch.Tensor]], gap: int = 2) -> Image.Image:
    """Tile (3, H, W) tensors row by row on a white background."""
    tiles = [[tensor_to_image(t) for t in row] for row in rows]
    w = max(im.width for row in tiles for im in row)
    h = max(im.height for row in tiles for im in row)
    cols = max(len(row) for row in tiles)
    canvas = Image.new("RGB", (cols * w + (cols - 1) * gap, len(tiles) * h + (len(tiles) - 1) * gap), "white")
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            canvas.paste(im, (c * (w + gap), r * (h + gap)))
    return canvas
