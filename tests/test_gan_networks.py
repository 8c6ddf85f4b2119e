"""The networks reproduce the reference implementation's module tree, so reference .pth files load.

The expected layouts below are the state_dict keys and shapes of junyanz/pytorch-CycleGAN-and-pix2pix
``define_G('resnet_9blocks', norm='instance')``, ``define_G('unet_256', norm='batch')`` (pix2pix's
default) and ``define_D('basic')``, written out literally so a change in our module tree cannot
silently change the expectation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.engines.gan import data, losses, networks, precision
from core.engines.gan.networks import DiscriminatorSpec, GeneratorSpec, InstanceNorm2d, ReflectionPad2d
from core.engines.gan.weights import infer_spec
from core.kinds import gan as kinds

pytestmark = pytest.mark.usefixtures("single_thread")

RESNET_9BLOCKS_NGF64 = """
model.1.weight:64x3x7x7 model.1.bias:64 model.4.weight:128x64x3x3 model.4.bias:128 model.7.weight:256x128x3x3
model.7.bias:256
""" + "".join(f" model.{i}.conv_block.1.weight:256x256x3x3 model.{i}.conv_block.1.bias:256"
              f" model.{i}.conv_block.5.weight:256x256x3x3 model.{i}.conv_block.5.bias:256"
              for i in range(10, 19)) + """
model.19.weight:256x128x3x3 model.19.bias:128 model.22.weight:128x64x3x3 model.22.bias:64 model.26.weight:3x64x7x7
model.26.bias:3
"""


def _bn(prefix: str, c: int) -> str:
    return " ".join(f"{prefix}.{n}:{c}" for n in ("weight", "bias", "running_mean", "running_var")) + \
        f" {prefix}.num_batches_tracked:"


UNET_256_BATCH = " ".join([
    "model.model.0.weight:64x3x4x4",
    "model.model.1.model.1.weight:128x64x4x4", _bn("model.model.1.model.2", 128),
    "model.model.1.model.3.model.1.weight:256x128x4x4", _bn("model.model.1.model.3.model.2", 256),
    "model.model.1.model.3.model.3.model.1.weight:512x256x4x4", _bn("model.model.1.model.3.model.3.model.2", 512),
    "model.model.1.model.3.model.3.model.3.model.1.weight:512x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.2", 512),
    "model.model.1.model.3.model.3.model.3.model.3.model.1.weight:512x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.3.model.2", 512),
    "model.model.1.model.3.model.3.model.3.model.3.model.3.model.1.weight:512x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.3.model.3.model.2", 512),
    # innermost: LeakyReLU, down conv, ReLU, up conv, norm
    "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight:512x512x4x4",
    "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.3.weight:512x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.4", 512),
    # way back up: up conv (in = 2 x inner) and norm of each level
    "model.model.1.model.3.model.3.model.3.model.3.model.3.model.5.weight:1024x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.3.model.3.model.6", 512),
    "model.model.1.model.3.model.3.model.3.model.3.model.5.weight:1024x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.3.model.6", 512),
    "model.model.1.model.3.model.3.model.3.model.5.weight:1024x512x4x4",
    _bn("model.model.1.model.3.model.3.model.3.model.6", 512),
    "model.model.1.model.3.model.3.model.5.weight:1024x256x4x4", _bn("model.model.1.model.3.model.3.model.6", 256),
    "model.model.1.model.3.model.5.weight:512x128x4x4", _bn("model.model.1.model.3.model.6", 128),
    "model.model.1.model.5.weight:256x64x4x4", _bn("model.model.1.model.6", 64),
    "model.model.3.weight:128x3x4x4", "model.model.3.bias:3",
])

PATCHGAN_INSTANCE = """model.0.weight:64x3x4x4 model.0.bias:64 model.2.weight:128x64x4x4 model.2.bias:128
model.5.weight:256x128x4x4 model.5.bias:256 model.8.weight:512x256x4x4 model.8.bias:512 model.11.weight:1x512x4x4
model.11.bias:1"""


def _layout(text: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for item in text.split():
        key, shape = item.split(":")
        out.append((key, tuple(int(s) for s in shape.split("x")) if shape else ()))
    return out


def _actual(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def test_resnet_9blocks_keys_and_shapes_match_reference() -> None:
    assert _actual(GeneratorSpec.from_name("resnet_9blocks", norm="instance").build()) == _layout(RESNET_9BLOCKS_NGF64)


def test_unet_256_keys_and_shapes_match_reference() -> None:
    assert sorted(_actual(GeneratorSpec.from_name("unet_256", norm="batch").build())) == sorted(_layout(UNET_256_BATCH))


def test_patchgan_keys_match_reference() -> None:
    assert _actual(DiscriminatorSpec("basic", 64, 3, "instance").build()) == _layout(PATCHGAN_INSTANCE)
    conditional = DiscriminatorSpec("basic", 64, 3, "batch", input_nc=6).build().state_dict()
    assert conditional["model.0.weight"].shape == (64, 6, 4, 4)
    assert "model.2.bias" not in conditional and "model.3.running_mean" in conditional  # batch norm: no conv bias
    pixel = DiscriminatorSpec("pixel", 64, 3, "batch").build().state_dict()
    assert list(pixel)[:3] == ["net.0.weight", "net.0.bias", "net.2.weight"]


def test_resnet_dropout_shifts_the_second_convolution() -> None:
    sd = GeneratorSpec.from_name("resnet_6blocks", ngf=8, dropout=True).build().state_dict()
    assert "model.10.conv_block.6.weight" in sd and "model.10.conv_block.5.weight" not in sd


@pytest.mark.parametrize("netG", ["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_architecture_is_inferred_from_keys_and_shapes(netG: str, norm: str) -> None:
    for dropout in (False, True):
        spec = GeneratorSpec.from_name(netG, ngf=8, norm=norm, dropout=dropout)
        found, _ = infer_spec(spec.build().state_dict())
        expected = spec if spec.arch == "resnet" else spec.with_(dropout=False)  # U-Net dropout has no weights
        assert found == expected
        assert found.name == netG


def test_generators_keep_the_size_and_range() -> None:
    for netG, size in (("resnet_6blocks", 36), ("unet_128", 128)):
        net = networks.init_weights(GeneratorSpec.from_name(netG, ngf=4).build())
        y = net(torch.rand(2, 3, size, size) * 2 - 1)
        assert y.shape == (2, 3, size, size) and y.abs().max() <= 1
    d = DiscriminatorSpec("basic", 8).build()
    assert d(torch.rand(1, 3, 64, 64)).shape == (1, 1, 6, 6)  # 70x70 patches on a 64 px image


def test_init_is_normal_0_002() -> None:
    net = networks.init_weights(GeneratorSpec.from_name("resnet_6blocks", norm="batch").build(),
                                generator=torch.Generator().manual_seed(0))
    w = net.model[1].weight.detach()
    assert abs(float(w.mean())) < 2e-3 and abs(float(w.std()) - 0.02) < 2e-3
    bn = net.model[2]
    assert abs(float(bn.weight.detach().mean()) - 1.0) < 0.01 and float(bn.bias.detach().abs().max()) == 0


def test_instance_norm_channels_last_equals_reference() -> None:
    x = torch.randn(2, 8, 9, 7)
    ref = F.instance_norm(x)
    norm = InstanceNorm2d(8, affine=False, track_running_stats=False)
    torch.testing.assert_close(norm(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x), ref)


def test_reflection_pad_keeps_bf16_under_autocast() -> None:
    x = torch.randn(1, 4, 6, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ReflectionPad2d(1)(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.pad(x.float(), (1, 1, 1, 1), mode="reflect"))


def test_gan_losses() -> None:
    pred = torch.zeros(2, 1, 3, 3)
    assert float(losses.gan_loss(pred + 1, True, "lsgan")) == 0.0
    assert float(losses.gan_loss(pred, True, "lsgan")) == 1.0
    assert abs(float(losses.gan_loss(pred, False, "vanilla")) - 0.6931) < 1e-3


def test_kind_choices_match_the_engine_registries() -> None:
    """The kinds module is torch-free, so it repeats the choices; they must not drift."""
    assert set(kinds.GENERATORS) == set(networks.GENERATORS)
    assert set(kinds.DISCRIMINATORS) == set(networks.DISCRIMINATORS)
    assert set(kinds.NORMS) == set(networks.NORMS)
    assert set(kinds.GAN_MODES) == set(losses.GAN_MODES)
    assert set(kinds.PREPROCESS) == set(data.PREPROCESS_MODES)
    assert set(kinds.AMP) == set(precision.AMP_CHOICES)
