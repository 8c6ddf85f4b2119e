"""Sample grids: rows of images in [-1, 1] -> one PIL image, for previews and the final sample output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (..., 3, H, W) -> uint8 [0, 255], rounding (the reference truncates, which darkens
    every pixel by half a level on average)."""
    return ((x.detach().float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    return Image.fromarray(to_uint8(x).cpu().permute(1, 2, 0).contiguous().numpy(), "RGB")


#: Short forms used when a label does not fit above its tile at the smallest legible size.
SHORT_LABELS = {"reconstructed": "rec."}
MIN_FONT, MAX_FONT = 8, 14
#: Narrower tiles (tests' tiny crops) get no labels.
MIN_TILE = 32


def grid(rows: Sequence[Sequence[torch.Tensor]], gap: int = 2,
         labels: Sequence[Sequence[str]] | None = None) -> Image.Image:
    """Tile (3, H, W) tensors row by row on a white background. With ``labels`` (one per tile, row by row),
    each row gets a strip above it naming its tiles ("real A", "fake B"...), drawn into the image itself
    so a downloaded sample grid explains itself as well as the page does."""
    tiles = [[tensor_to_image(t) for t in row] for row in rows]
    w = max(im.width for row in tiles for im in row)
    h = max(im.height for row in tiles for im in row)
    cols = max(len(row) for row in tiles)
    font = _label_font(w, [t for row in labels for t in row]) if labels else None
    strip = (font.size + 6) if font is not None else 0
    # Rows that all show the same columns (one sample per row) share one header; otherwise each row has its own.
    header_only = labels is not None and len({tuple(r) for r in labels}) == 1 and len(labels) == len(tiles) > 1
    strips = [strip if (r == 0 or not header_only) else 0 for r in range(len(tiles))]
    height = sum(strips) + len(tiles) * h + (len(tiles) - 1) * gap
    canvas = Image.new("RGB", (cols * w + (cols - 1) * gap, height), "white")
    draw = ImageDraw.Draw(canvas) if font is not None else None
    top = 0
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            canvas.paste(im, (c * (w + gap), top + strips[r]))
            if draw is not None and labels is not None and strips[r] and c < len(labels[r]):
                text = _fit(labels[r][c], font, w)
                draw.text((c * (w + gap) + w / 2, top + strip / 2), text, fill=(40, 40, 40), font=font, anchor="mm")
        top += strips[r] + h + gap
    return canvas


def _label_font(width: int, texts: Sequence[str]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont | None:
    """The largest size (up to :data:`MAX_FONT`) at which every label, or its short form, fits a tile;
    None (no labels) for tiles too small to carry legible text."""
    if width < MIN_TILE:
        return None
    for size in range(MAX_FONT, MIN_FONT - 1, -1):
        try:
            font = ImageFont.load_default(size)
        except (OSError, ImportError):  # pragma: no cover - Pillow without FreeType: no labels
            return None
        if all(font.getlength(_fit(t, font, width)) <= width - 2 for t in texts):
            return font
    return ImageFont.load_default(MIN_FONT)


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    if font.getlength(text) <= width - 2:
        return text
    for long, short in SHORT_LABELS.items():
        text = text.replace(long, short)
    return text
