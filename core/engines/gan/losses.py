"""Loss terms of CycleGAN and pix2pix, always evaluated in float32.

Under autocast the networks produce bfloat16/float16 tensors; the losses upcast first so a mean over a
batch of patches does not lose precision and the reported numbers do not depend on the precision used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_MODES = ("lsgan", "vanilla")


def gan_loss(pred: torch.Tensor, target_is_real: bool, mode: str) -> torch.Tensor:
    """Adversarial loss of discriminator logits ``pred`` (N, 1, H', W') against an all-real/all-fake target.

    ``lsgan``: mean squared error to 1/0 (CycleGAN's default, more stable than log loss);
    ``vanilla``: binary cross-entropy on logits (pix2pix's default; the sigmoid lives inside the loss).
    """
    pred = pred.float()
    target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
    if mode == "lsgan":
        return F.mse_loss(pred, target)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(pred, target)
    raise ValueError(f"unknown gan_mode {mode!r}; expected one of {', '.join(GAN_MODES)}")


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in float32 (cycle, identity and pix2pix's L1 terms)."""
    return F.l1_loss(a.float(), b.float())
