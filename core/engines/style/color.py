"""Original-colour transfer: keep the content's colours, take the stylised image's luminance.

This is neural-style's ``-original_colors``: after (and for previews during) optimisation, the output
is rebuilt from the luminance Y of the stylised image and the chroma Cb, Cr of the content image, in
full-range BT.601 YCbCr (the JPEG definition). Luminance carries the brush strokes and texture; chroma
carries the palette, which is what a person who asks for "original colours" wants kept.
"""

from __future__ import annotations

import torch

_RGB_TO_YCBCR = ((0.299, 0.587, 0.114),
                 (-0.168736, -0.331264, 0.5),
                 (0.5, -0.418688, -0.081312))
_YCBCR_TO_RGB = ((1.0, 0.0, 1.402),
                 (1.0, -0.344136, -0.714136),
                 (1.0, 1.772, 0.0))


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) Y, Cb, Cr with chroma centred on 0.5."""
    m = torch.tensor(_RGB_TO_YCBCR, device=rgb.device, dtype=rgb.dtype)
    out = torch.einsum("ij,bjhw->bihw", m, rgb)
    return out + torch.tensor([0.0, 0.5, 0.5], device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    m = torch.tensor(_YCBCR_TO_RGB, device=ycc.device, dtype=ycc.dtype)
    centred = ycc - torch.tensor([0.0, 0.5, 0.5], device=ycc.device, dtype=ycc.dtype).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, centred)


def keep_colors(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylised`` with the chroma of ``content`` (same shape), clamped to [0, 1]."""
    y = rgb_to_ycbcr(stylised)[:, :1]  # (B, 1, H, W)
    cbcr = rgb_to_ycbcr(content)[:, 1:]  # (B, 2, H, W)
    return ycbcr_to_rgb(torch.cat((y, cbcr), dim=1)).clamp(0.0, 1.0)
