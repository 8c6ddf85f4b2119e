"""Device and numeric precision: one decision, made once per run, used by training and translation.

``amp="auto"`` picks the fastest precision that keeps results faithful on the hardware at hand:
- CUDA: bfloat16 autocast where the GPU supports it (no loss scaling needed), else float16 autocast with
  a gradient scaler.
- CPU: bfloat16 autocast when the CPU has bf16 matrix instructions (AMX or AVX512-BF16, see
  :func:`core.engines.device.cpu_has_fast_bf16`), else float32.
Weights, optimizer state and losses stay float32 in every mode; autocast only lowers the precision of
convolution inputs and activations.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from core.engines.device import cpu_has_fast_bf16
from core.errors import UserError

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = plain float32
    channels_last: bool  # NHWC activations: faster convolutions on CUDA and for float32 on CPU
    use_scaler: bool  # float16 on CUDA needs loss scaling

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> ContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def choose_precision(device: torch.device, amp: str = "auto", training: bool = True) -> Precision:
    if amp not in AMP_CHOICES:
        raise UserError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}", "amp")
    cuda = device.type == "cuda"
    if amp == "auto":
        if cuda:
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            amp = "bf16" if cpu_has_fast_bf16() else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    # NHWC on CUDA and for inference; NCHW for CPU *training* in every precision, where the NHWC backward
    # of instance norm (a group norm there) is slow: bf16 training measured 1.5x slower per CycleGAN step
    # in NHWC; fp32 on AVX2 kernels spends 5% of a 128 px ResNet-9 step in that backward against 0.5% in
    # NCHW, with convolutions equally fast in both layouts. Inference in NHWC is 1.8x faster in bf16.
    channels_last = cuda or not training
    return Precision(device=device, dtype=dtype, channels_last=channels_last,
                     use_scaler=cuda and dtype is torch.float16)
