"""Translate images of any size with a generator: pad to what the architecture needs, run, crop back.

The reference resizes test images to a square, which distorts them and fails on sizes the network
cannot take. Here an image keeps its size: it is reflect-padded to a multiple of the generator's
``pad_multiple`` (4 for ResNet, 2**depth for U-Net), translated, and the padding is cut off again.
Reflection (not zeros) keeps the border statistics natural for instance norm and convolutions; when the
padding is larger than the image (a 37 px image in a U-Net-256), the image is mirrored repeatedly.

Images of the same padded size are translated together in batches under ``torch.inference_mode``,
channels-last, and with bf16 autocast where the CPU/GPU supports it and it pays (``amp="auto"``: on
CPU only for images from 128x128 pixels, see :data:`CPU_BF16_MIN_PIXELS`; ``fp32`` for float32
throughout). The network runs in eval mode: dropout off, batch norm on its running statistics (the
reference's test script, without ``--eval``, keeps both in training mode).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.engines.device import resolve_device
from core.engines.gan.data import to_model_range, to_uint8_tensor
from core.engines.gan.networks import GeneratorSpec
from core.engines.gan.precision import Precision, choose_precision
from core.engines.gan.preview import to_uint8
from core.errors import UserError

#: Padded input pixels per batch (``batch_size`` caps it too). On CPU, batching pays only for small
#: images: at 256 px one image per call is fastest (measured 0.136 s/img vs 0.159 at 4 per call; the
#: activations of a batch no longer fit in cache), at 64-128 px four per call are 20% faster. GPUs
#: want big batches; the budget also bounds peak memory.
BATCH_PIXELS = {"cpu": 1 << 16, "cuda": 1 << 22}
#: On CPU, oneDNN's bf16 convolutions are fast only from about 128x128 pixels per image: below that it
#: falls back to kernels no faster than float32 (measured for ResNet-9, ngf 64: 120x120 runs 1.05x
#: float32's speed, 128x128 and 64x256 4.4x). ``amp="auto"`` therefore runs smaller images in float32.
CPU_BF16_MIN_PIXELS = 1 << 14
#: Rough bytes of activations per input pixel and generator filter (fp32, the largest layers alive at once).
BYTES_PER_PIXEL_FILTER = 16


def padded_size(h: int, w: int, spec: GeneratorSpec) -> tuple[int, int]:
    """The smallest size >= (h, w) the generator accepts: multiples of ``pad_multiple``, at least ``min_size``."""
    m = spec.pad_multiple
    return max(spec.min_size, -(-h // m) * m), max(spec.min_size, -(-w // m) * m)


def reflect_pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad (N, C, H0, W0) on the bottom/right to (N, C, h, w) by mirroring, repeatedly if needed."""
    while x.shape[-2] < h or x.shape[-1] < w:
        dh = min(h - x.shape[-2], x.shape[-2] - 1)
        dw = min(w - x.shape[-1], x.shape[-1] - 1)
        if dh <= 0 and dw <= 0:  # a 1-pixel side cannot be mirrored: repeat it instead
            return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode="replicate")
        x = F.pad(x, (0, max(dw, 0), 0, max(dh, 0)), mode="reflect")
    return x


class Translator:
    """A loaded generator ready to translate PIL images (see module docstring)."""

    def __init__(self, net: nn.Module, spec: GeneratorSpec, device: str = "auto", amp: str = "auto",
                 max_bytes: int = 8 << 30) -> None:
        self.spec = spec
        self.precision: Precision = choose_precision(resolve_device(device), amp, training=False)
        self.net = net.to(self.precision.device, memory_format=self.precision.memory_format()).eval()
        self.max_bytes = max_bytes
        # Small images on CPU: float32 (see CPU_BF16_MIN_PIXELS), unless bf16 was asked for explicitly.
        self.small_images_fp32 = (amp == "auto" and self.precision.device.type == "cpu"
                                  and self.precision.dtype is not None)
        self.precisions_used: set[str] = set()  # what the last translate() ran in, for reports

    def check_size(self, name: str, width: int, height: int) -> None:
        """Refuse an image whose activations would not fit, with a message that says what to do."""
        h, w = padded_size(height, width, self.spec)
        need = h * w * self.spec.ngf * BYTES_PER_PIXEL_FILTER
        if need > self.max_bytes:
            raise UserError(f"{name} is {width}x{height} pixels; translating it at full size needs about "
                            f"{need / 2**30:.1f} GiB, more than the {self.max_bytes / 2**30:.1f} GiB allowed. "
                            "Scale it down first.", "images", 413)

    @torch.inference_mode()
    def _run(self, batch: Sequence[torch.Tensor], h: int, w: int) -> list[torch.Tensor]:
        """(3, h_i, w_i) uint8 images that all pad to (h, w) -> translated (3, h_i, w_i) uint8 images."""
        dev = self.precision.device
        x = torch.cat([reflect_pad_to(to_model_range(t.to(dev, non_blocking=True))[None], h, w) for t in batch])
        x = x.contiguous(memory_format=self.precision.memory_format())  # (N, 3, h, w)
        if self.small_images_fp32 and h * w < CPU_BF16_MIN_PIXELS:
            self.precisions_used.add("fp32")
            y = to_uint8(self.net(x)).cpu()
        else:
            self.precisions_used.add(self.precision.name)
            with self.precision.autocast():
                y = to_uint8(self.net(x)).cpu()
        return [y[i, :, :t.shape[-2], :t.shape[-1]] for i, t in enumerate(batch)]

    def translate(self, images: Sequence[Image.Image], batch_size: int = 4,
                  on_done: Callable[[int], None] | None = None) -> list[Image.Image]:
        """Translate each image at its own size; the output list matches the input order.

        ``on_done(k)`` is called with the number of images finished so far (progress, cancel checks).
        """
        self.precisions_used = set()
        tensors = [to_uint8_tensor(im) for im in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)  # padded size -> image indices
        for i, t in enumerate(tensors):
            groups[padded_size(t.shape[-2], t.shape[-1], self.spec)].append(i)
        out: list[Image.Image | None] = [None] * len(images)
        done = 0
        for (h, w), idx in groups.items():
            budget = BATCH_PIXELS.get(self.precision.device.type, BATCH_PIXELS["cpu"])
            per_batch = max(1, min(batch_size, budget // (h * w)))
            for k in range(0, len(idx), per_batch):
                chunk = idx[k:k + per_batch]
                for i, r in zip(chunk, self._run([tensors[i] for i in chunk], h, w)):
                    out[i] = Image.fromarray(r.permute(1, 2, 0).contiguous().numpy(), "RGB")
                done += len(chunk)
                if on_done is not None:
                    on_done(done)
        return [im for im in out if im is not None]
