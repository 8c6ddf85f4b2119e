"""Which device an engine runs on, and whether this CPU runs bf16 convolutions natively.

Both engines (style transfer and the GANs) ask the same two questions; answering them in one place
keeps ``device=auto`` and ``precision=auto`` meaning the same thing for every job kind.
"""

from __future__ import annotations

import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` (or empty) -> CUDA when a GPU is visible, else CPU. Asking for CUDA on a worker without
    one is the caller's mistake, reported against the ``device`` parameter."""
    if name in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device cuda was requested but this worker has no CUDA GPU; use device auto or cpu",
                        "device")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions and matmuls natively: AMX tiles (Intel Sapphire Rapids
    and later) or AVX512-BF16 (e.g. AMD Zen 4). Without either, bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover - private API; absent or failing means "no"
            continue
    return False
