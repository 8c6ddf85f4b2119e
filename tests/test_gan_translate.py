"""Translation keeps every image's size, batches without changing results, and maps pixels like the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.engines.gan.networks import GeneratorSpec, init_weights
from core.engines.gan.translate import Translator, padded_size, reflect_pad_to
from core.errors import UserError
from tests.gan_support import noise_image

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = [(37, 53), (53, 37), (1, 1), (5, 300), (64, 64), (130, 9)]


def _net(netG: str, ngf: int = 8, norm: str = "instance"):
    spec = GeneratorSpec.from_name(netG, ngf=ngf, norm=norm)
    return init_weights(spec.build(), generator=torch.Generator().manual_seed(3)), spec


@pytest.mark.parametrize("netG", ["resnet_6blocks", "unet_128"])
def test_any_size_comes_back_at_the_same_size(netG: str) -> None:
    net, spec = _net(netG)
    images = [noise_image(w, h, i) for i, (w, h) in enumerate(SIZES)]
    out = Translator(net, spec, device="cpu", amp="fp32").translate(images)
    assert [im.size for im in out] == [im.size for im in images]
    assert all(im.mode == "RGB" for im in out)


def test_padding_rules() -> None:
    assert padded_size(37, 53, GeneratorSpec.from_name("resnet_9blocks")) == (40, 56)
    assert padded_size(1, 1, GeneratorSpec.from_name("resnet_9blocks")) == (8, 8)
    assert padded_size(37, 300, GeneratorSpec.from_name("unet_256")) == (256, 512)
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert reflect_pad_to(x, 1, 8).flatten().tolist() == [0, 1, 2, 1, 0, 1, 2, 1]


def test_batching_does_not_change_results() -> None:
    net, spec = _net("resnet_6blocks")
    tr = Translator(net, spec, device="cpu", amp="fp32")
    images = [noise_image(37, 53, 1), noise_image(40, 50, 2), noise_image(38, 55, 3), noise_image(20, 20, 4)]
    together = tr.translate(images, batch_size=8)
    alone = [tr.translate([im], batch_size=1)[0] for im in images]
    for a, b in zip(together, alone):
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 1


def test_pixels_map_like_the_reference() -> None:
    """[0, 255] -> x / 127.5 - 1 -> G -> (y + 1) * 127.5 (rounded), with no padding needed at 64 px."""
    net, spec = _net("resnet_6blocks")
    img = noise_image(64, 64, 7)
    out = Translator(net, spec, device="cpu", amp="fp32").translate([img])[0]
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(127.5).sub(1)[None]
    with torch.no_grad():
        y = net.eval()(x)[0]
    expected = ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(out, int) - expected.astype(int)).max() <= 1


def test_bf16_stays_close_to_fp32() -> None:
    net, spec = _net("resnet_6blocks", ngf=16)
    images = [noise_image(48, 40, 5)]
    fp32 = Translator(net, spec, device="cpu", amp="fp32").translate(images)[0]
    bf16 = Translator(net, spec, device="cpu", amp="bf16").translate(images)[0]
    diff = np.abs(np.asarray(fp32, int) - np.asarray(bf16, int))
    assert diff.mean() < 2.0 and diff.max() <= 16


def test_oversized_images_are_refused_with_a_reason() -> None:
    net, spec = _net("resnet_6blocks", ngf=64)
    tr = Translator(net, spec, device="cpu", amp="fp32", max_bytes=1 << 20)
    with pytest.raises(UserError, match="needs about"):
        tr.check_size("big.png", 4000, 3000)
    tr.check_size("small.png", 8, 8)
