"""Generators and discriminators of CycleGAN/pix2pix, laid out exactly like the reference implementation.

The module tree (and so every ``state_dict`` key) mirrors junyanz/pytorch-CycleGAN-and-pix2pix
``models/networks.py``: a ResNet generator is one ``nn.Sequential`` called ``model`` (``model.1.weight``
is the 7x7 stem, ``model.10.conv_block.1.weight`` the first residual block's first conv), a U-Net is a
chain of nested ``UnetSkipConnectionBlock`` (``model.model.1.model.3...``), a PatchGAN is ``model.N``
and the pixel discriminator ``net.N``. Index positions are part of the file format, which is why
parameter-free layers (padding, ReLU, dropout, the ``Identity`` standing in for "no norm") are kept as
real modules: dropping one would shift every later key and break loading reference ``.pth`` files.

Two reference quirks are reproduced on purpose because they decide which keys exist:
- convolutions followed by a norm have a bias only with instance norm (``use_bias``), so ``norm='none'``
  also means "no bias" there;
- instance norm has no affine parameters and no running statistics (no keys at all).

Shapes in comments are for a batch of N images, C channels, H x W pixels.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "none")

#: Generator names of the reference -> (architecture, depth). Depth is the number of residual blocks
#: (ResNet) or of down-samplings (U-Net: 7 -> 128 px bottleneck of 1x1, 8 -> 256 px).
GENERATORS: dict[str, tuple[str, int]] = {
    "resnet_9blocks": ("resnet", 9),
    "resnet_6blocks": ("resnet", 6),
    "unet_128": ("unet", 7),
    "unet_256": ("unet", 8),
}
DISCRIMINATORS = ("basic", "n_layers", "pixel")


def parse_generator_name(netG: str) -> tuple[str, int]:
    """``resnet_9blocks`` -> ("resnet", 9), ``unet_256`` -> ("unet", 8).

    Besides the reference's four names, any ``resnet_<n>blocks`` and ``unet_<2**k>`` (k >= 5) is
    accepted: tests and quick experiments use small ones; the job schemas offer only the four.
    """
    if netG in GENERATORS:
        return GENERATORS[netG]
    m = re.fullmatch(r"resnet_(\d+)blocks", netG)
    if m:
        return "resnet", int(m.group(1))
    m = re.fullmatch(r"unet_(\d+)", netG)
    if m and int(m.group(1)) >= 32 and int(m.group(1)) & (int(m.group(1)) - 1) == 0:
        return "unet", int(m.group(1)).bit_length() - 1
    raise ValueError(f"unknown generator {netG!r}; expected one of {', '.join(GENERATORS)}")


class InstanceNorm2d(nn.InstanceNorm2d):
    """Instance norm (no affine, no running statistics) that keeps channels-last tensors channels-last.

    ``F.instance_norm`` folds the batch into channels and so forces an NCHW copy of an NHWC input (and
    another one back before the next convolution). Group norm with one channel per group is the same
    normalisation (per sample and channel over H x W, same eps) and has an NHWC kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return F.group_norm(x, x.shape[1], eps=self.eps)
        return super().forward(x)


def norm_factory(norm: str) -> tuple[Callable[[int], nn.Module], bool]:
    """Return ``(make_norm(channels), use_bias)`` for a norm kind, with the reference's bias rule."""
    if norm == "instance":
        return (lambda c: InstanceNorm2d(c, affine=False, track_running_stats=False)), True
    if norm == "batch":
        return (lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)), False
    if norm == "none":
        return (lambda c: nn.Identity()), False
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


class ReflectionPad2d(nn.ReflectionPad2d):
    """Reflection padding that keeps the input's dtype under autocast.

    CPU autocast runs ``reflection_pad2d`` in float32, so a bf16 activation would be widened here and
    narrowed again by the next convolution: two full copies per convolution for nothing (padding only
    moves values). Padding with autocast off keeps bf16 in, bf16 out, with identical values.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.pad(x, self.padding, mode="reflect")


# ---------------------------------------------------------------------------------------------------
# ResNet generator (Johnson et al.): 2 stride-2 downsamplings, n residual blocks, 2 upsamplings.
# ---------------------------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """x + conv_block(x), with reflection padding so the block keeps the spatial size."""

    def __init__(self, dim: int, make_norm: Callable[[int], nn.Module], use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = [
            ReflectionPad2d(1),                                     # 0
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),  # 1: conv_block.1
            make_norm(dim),                                            # 2
            nn.ReLU(True),                                             # 3
        ]
        if use_dropout:
            layers += [nn.Dropout(0.5)]                                # 4 (shifts the rest by one)
        layers += [
            ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),  # conv_block.5 (or .6 with dropout)
            make_norm(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)  # (N, dim, H, W)


class ResnetGenerator(nn.Module):
    """Image (N, in_nc, H, W) -> image (N, out_nc, H, W) in [-1, 1]; H and W must be multiples of 4."""

    pad_multiple = 4

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "instance",
                 use_dropout: bool = False, n_blocks: int = 9):
        super().__init__()
        make_norm, use_bias = norm_factory(norm)
        model: list[nn.Module] = [
            ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),  # model.1: (N, ngf, H, W)
            make_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # model.4, model.7: (N, ngf*2, H/2, W/2) then (N, ngf*4, H/4, W/4)
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                make_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        for _ in range(n_blocks):  # model.10 ... model.(9+n_blocks): (N, ngf*4, H/4, W/4)
            model += [ResnetBlock(ngf * 4, make_norm, use_dropout, use_bias)]
        for i in range(2):  # back to (N, ngf*2, H/2, W/2) then (N, ngf, H, W)
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                   output_padding=1, bias=use_bias),
                make_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [
            ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),  # always has a bias
            nn.Tanh(),                                            # (N, out_nc, H, W) in [-1, 1]
        ]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------------
# U-Net generator: num_downs stride-2 convs down to 1x1 (at the nominal size), skip connections.
# ---------------------------------------------------------------------------------------------------
class UnetSkipConnectionBlock(nn.Module):
    """One level: down -> submodule -> up, concatenated with its input (except the outermost level).

    Input (N, outer_nc or input_nc, H, W) -> (N, 2*outer_nc, H, W), or (N, outer_nc, H, W) outermost.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", use_dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        make_norm, use_bias = norm_factory(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model: list[nn.Module] = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, make_norm(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, make_norm(inner_nc),  # 0, 1, 2
                     submodule,                                                # 3
                     nn.ReLU(True), upconv, make_norm(outer_nc)]               # 4, 5, 6
            if use_dropout:
                model += [nn.Dropout(0.5)]                                     # 7 (no parameters)
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """Image (N, in_nc, H, W) -> (N, out_nc, H, W); H and W must be multiples of 2**num_downs."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False):
        super().__init__()
        if num_downs < 5:
            raise ValueError("a U-Net needs at least 5 down-samplings")
        self.pad_multiple = 2**num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------------
# Discriminators
# ---------------------------------------------------------------------------------------------------
class NLayerDiscriminator(nn.Module):
    """PatchGAN: (N, C, H, W) -> (N, 1, H', W') real/fake logits; n_layers=3 sees 70x70 patches."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        make_norm, use_bias = norm_factory(norm)
        kw, padw = 4, 1
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
                                nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):  # each halves H and W
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                    make_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw)]  # (N, 1, H', W')
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: (N, C, H, W) -> (N, 1, H, W), one real/fake logit per pixel."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        make_norm, use_bias = norm_factory(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=use_bias),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------------------------------
# Specs: the options needed to rebuild a network (stored in model metadata and checkpoints).
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorSpec:
    """Everything that decides a generator's structure. ``depth``: residual blocks or U-Net levels."""

    arch: str = "resnet"  # "resnet" | "unet"
    depth: int = 9
    ngf: int = 64
    norm: str = "instance"
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3

    @classmethod
    def from_name(cls, netG: str, **kw: Any) -> "GeneratorSpec":
        arch, depth = parse_generator_name(netG)
        return cls(arch=arch, depth=depth, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"netG": self.name}

    def with_(self, **kw: Any) -> "GeneratorSpec":
        return replace(self, **kw)

    @property
    def name(self) -> str:
        """The reference's ``--netG`` name (``resnet_9blocks``), or a descriptive one for other depths."""
        return f"resnet_{self.depth}blocks" if self.arch == "resnet" else f"unet_{2**self.depth}"

    @property
    def pad_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 4 if self.arch == "resnet" else 2**self.depth

    @property
    def min_size(self) -> int:
        """Smallest input side: a ResNet's 1/4-scale features must still take a 1-pixel reflection pad."""
        return 8 if self.arch == "resnet" else 2**self.depth

    def build(self) -> nn.Module:
        if self.arch == "resnet":
            return ResnetGenerator(self.input_nc, self.output_nc, self.ngf, self.norm, self.dropout, self.depth)
        if self.arch == "unet":
            return UnetGenerator(self.input_nc, self.output_nc, self.depth, self.ngf, self.norm, self.dropout)
        raise ValueError(f"unknown generator architecture {self.arch!r}")


@dataclass(frozen=True)
class DiscriminatorSpec:
    netD: str = "basic"  # basic (= n_layers with 3) | n_layers | pixel
    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    input_nc: int = 3

    def build(self) -> nn.Module:
        if self.netD == "basic":
            return NLayerDiscriminator(self.input_nc, self.ndf, 3, self.norm)
        if self.netD == "n_layers":
            return NLayerDiscriminator(self.input_nc, self.ndf, self.n_layers, self.norm)
        if self.netD == "pixel":
            return PixelDiscriminator(self.input_nc, self.ndf, self.norm)
        raise ValueError(f"unknown discriminator {self.netD!r}; expected one of {', '.join(DISCRIMINATORS)}")


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """The reference's ``normal`` init: conv weights ~ N(0, gain), biases 0, BatchNorm weight ~ N(1, gain)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.normal_(0.0, gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, gain, generator=generator)
                m.bias.zero_()
    return net


def has_batch_norm(net: nn.Module) -> bool:
    """Batch statistics couple the samples of a batch, which rules out merging forward passes."""
    return any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
