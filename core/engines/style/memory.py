"""Will a style-transfer job fit in memory? Estimated before anything large is allocated.

A job that runs out of memory half-way wastes minutes and, on a GPU, can take the worker down with
it; one that is refused up front gets a message with the largest size that would fit. The estimate
counts what one loss+gradient evaluation keeps alive at the output size: VGG activations saved for
the backward pass (in the compute dtype, plus max-pool indices), fp32 copies of captured features,
gradients in flight, the optimiser's history, the weights and the style images' forward pass.
Calibrated against the measured peak RSS of whole runs on CPU (512 px and 1024 px, bf16 and fp32,
L-BFGS history 10 and 100): the estimate sits 35-60% above what was used, erring on the side of
refusing a job that would have just fit rather than starting one that dies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence

from core.engines.reservations import pending_elsewhere
from core.engines.vgg import LAYERS, layer

#: Headroom for allocator fragmentation, oneDNN/cuDNN workspaces and the unaccounted.
SAFETY = 1.15
#: The process itself (torch runtime, images, Python) on a CPU, in bytes.
CPU_BASE = 400 * 2**20


def estimate_bytes(width: int, height: int, style_sizes: Sequence[tuple[int, int]], capture: Collection[str],
                   compute_bytes: int, optimizer: str, history: int) -> int:
    """Bytes needed to optimise a ``width`` x ``height`` image (excluding the process's base size)."""
    upto = max(layer(n).index for n in capture) if capture else 0
    hw = width * height
    act = 0  # activations kept for backward, in compute dtype (in-place ReLUs share the conv output)
    extra = 0  # pool indices, fp32 copies of captured activations
    largest = 0
    n_params = 0
    for lay in LAYERS[: upto + 1]:
        elems = lay.out_channels * (hw // (lay.scale * lay.scale) + 1)
        largest = max(largest, elems)
        if lay.kind == "conv":
            act += elems * compute_bytes
            n_params += lay.out_channels * (lay.in_channels * 9 + 1)
        elif lay.kind == "pool":
            act += elems * compute_bytes
            extra += elems * 8  # int64 indices of max pooling
        if lay.name in capture:
            extra += elems * (compute_bytes + 4 + 4)  # kept copy, fp32 copy, its gradient
    grads = 3 * largest * max(compute_bytes, 4)  # gradient buffers alive during backward
    pixels = 3 * hw * 4
    opt = (2 * history + 8) * pixels if optimizer == "lbfgs" else 8 * pixels
    weights = n_params * (4 + compute_bytes)
    style_fwd = 0
    for sw, sh in style_sizes:  # no-grad forward: two activations alive at a time
        style_fwd = max(style_fwd, 2 * 64 * sw * sh * compute_bytes)
    total = act + extra + grads + opt + weights + style_fwd + 16 * pixels
    return int(total * SAFETY)


def available_bytes(device: str) -> int | None:
    """Memory a job may use on ``device`` now (None when it cannot be told). On CPU: what the host has
    available, less what other jobs starting on this host have reserved and not yet taken
    (:mod:`core.engines.reservations`)."""
    have = _free_bytes(device)
    if have is None or device.startswith("cuda"):
        return have
    return have - pending_elsewhere()


def _free_bytes(device: str) -> int | None:
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 - CPU_BASE
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) - CPU_BASE
    except (ValueError, OSError, AttributeError):
        return None


def largest_fitting_size(size: int, needed: int, available: int) -> int:
    """Largest longest side that would fit, assuming memory grows with the pixel count."""
    if needed <= 0:
        return size
    return max(0, int(size * math.sqrt(max(available, 0) / needed)) // 8 * 8)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover
