"""The documented style-transfer objective, with its targets computed once.

    loss = content_weight * sum_l c_l * mse(F_l(x), F_l(c))
         + style_weight   * sum_l w_l * mse(G_l(x), sum_i b_i G_l(s_i))
         + tv_weight      * TV(x)

Pixels are in [0, 1] (the optimiser's tensor is clamped to that range before the network sees it, so
every loss is the loss of a real image), normalised with ImageNet mean/std inside VGG-19. F_l is the
activation at layer l (C x H x W), G_l = F_l F_l^T / (C*H*W), mse is the mean over elements, TV is the
sum of absolute differences of neighbouring pixels, c_l / w_l are per-layer weights (1 by default) and
b_i the style blend weights (normalised to 1; with one style this is the plain Gatys objective).

The network may run in bf16 (the model's dtype), but Gram matrices, differences and sums are always
computed in fp32: targets and activations agree closely, and rounding their *difference* to bf16 would
drown it. Gradients flow back in the network's dtype (see :class:`_Gram`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from core.engines.vgg import VGG19Features


class _Gram(torch.autograd.Function):
    """G = M^T M / norm in fp32, for M in the network's dtype, with a one-matmul backward.

    Forward: M is upcast to fp32 for the product, because G is compared with a target it is close to
    and bf16 rounding of G would drown their difference. Backward: autograd's ``bmm`` would compute
    a gradient per operand (two matmuls, although both are M); as G is symmetric,
    dL/dM = M (dG + dG^T) / norm is one matmul, and it runs in M's dtype -- the gradient flows into
    the network's backward in that dtype anyway, so a bf16 network gets its bf16 matmul speed here
    too (what autocast would do), while an fp32 network stays fp32 throughout.
    """

    @staticmethod
    def forward(ctx, m: torch.Tensor, norm: float) -> torch.Tensor:  # m (B, HW, C) -> (B, C, C) fp32
        ctx.save_for_backward(m)
        ctx.norm = norm
        m32 = m.float()
        return torch.bmm(m32.transpose(1, 2), m32) / norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # grad (B, C, C) -> (B, HW, C)
        (m,) = ctx.saved_tensors
        sym = ((grad + grad.transpose(1, 2)) / ctx.norm).to(m.dtype)  # (B, C, C): scale the small matrix
        return torch.bmm(m, sym), None


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) activations -> (B, C, C) fp32 Gram matrices F F^T / (C*H*W)."""
    b, c, h, w = f.shape
    # A channels_last tensor is physically (B, H, W, C): this permute+reshape is then a free view.
    m = f.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C) in the network's dtype
    return _Gram.apply(m, float(c * h * w))  # (B, C, C) fp32


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of absolute differences of vertically and horizontally neighbouring pixels (a scalar)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()


class Objective:
    """The objective at one resolution: targets precomputed at construction, then ``(loss, parts)`` per call.

    ``parts`` is a (4,) fp32 tensor ``[loss, content, style, tv]`` with each term already multiplied by
    its weight, so ``loss = content + style + tv``; it stays on the device (no host sync per step).
    Terms and layers whose weight is 0 are not computed at all.
    """

    def __init__(self, vgg: VGG19Features, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 blend: Sequence[float], content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                 content_weight: float, style_weight: float, tv_weight: float) -> None:
        self.vgg = vgg
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.content_layers = {n: w for n, w in content_layers.items() if w > 0} if content_weight > 0 else {}
        self.style_layers = {n: w for n, w in style_layers.items() if w > 0} if style_weight > 0 else {}
        self.capture = frozenset(self.content_layers) | frozenset(self.style_layers)
        self.content_targets: dict[str, torch.Tensor] = {}
        self.style_targets: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if self.content_layers:
                feats = vgg(content, self.content_layers)
                self.content_targets = {n: f.float() for n, f in feats.items()}  # (1, C, H, W) fp32
            if self.style_layers:
                for style, b in zip(styles, blend):
                    if b == 0:
                        continue
                    feats = vgg(style, self.style_layers)
                    for n, f in feats.items():
                        g = gram(f)[0] * b  # (C, C)
                        self.style_targets[n] = g if n not in self.style_targets else self.style_targets[n] + g
                    del feats

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (1, 3, H, W) fp32, unconstrained -> (loss scalar, parts (4,)) of the image clamp(x, 0, 1)."""
        img = x.clamp(0.0, 1.0)
        zero = img.new_zeros(())
        content, style = zero, zero
        if self.capture:
            feats = self.vgg(img, self.capture)
            for n, w in self.content_layers.items():
                content = content + w * F.mse_loss(feats[n].float(), self.content_targets[n])
            for n, w in self.style_layers.items():
                style = style + w * F.mse_loss(gram(feats[n])[0], self.style_targets[n])
        tv = total_variation(img) if self.tv_weight > 0 else zero
        terms = torch.stack((self.content_weight * content, self.style_weight * style, self.tv_weight * tv))
        loss = terms.sum()
        return loss, torch.cat((loss.reshape(1), terms)).detach()
