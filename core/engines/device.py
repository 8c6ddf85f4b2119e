"""Which device an engine runs on, and whether this CPU runs bf16 convolutions natively.

Both engines (style transfer and the GANs) ask the same two questions; answering them in one place
keeps ``device=auto`` and ``precision=auto`` meaning the same thing for every job kind.
"""

from __future__ import annotations

import os

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


#: oneDNN ISA levels (``ONEDNN_MAX_CPU_ISA``) below which its bf16 kernels are emulated.
_ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                       "AVX512_CORE_VNNI"})


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions and matmuls natively: AMX tiles (Intel Sapphire Rapids
    and later) or AVX512-BF16 (e.g. AMD Zen 4). Without either, bf16 is emulated and about 60-100x
    slower than fp32 (measured: a 1024^3 bf16 matmul at 1 GFLOP/s against 128 GFLOP/s in fp32).

    Besides the CPU's flags, the kernels this process may use count: ``ATEN_CPU_CAPABILITY=avx2`` and
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (the two knobs PyTorch and oneDNN read themselves) restrict them to
    what a CPU without AVX-512 runs, and then bf16 is not fast either. That is also how the test suite
    runs the no-AVX-512 paths on any machine.
    """
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover - private API; absent or failing means "no"
            continue
    return False


def why_no_fast_bf16() -> str | None:
    """``None`` where bf16 is fast; otherwise the reason, for reports that leave bf16 out (benches)."""
    if cpu_has_fast_bf16():
        return None
    return ("this CPU runs no native bf16 (no AMX or AVX512-BF16 in use: "
            f"ATen capability {torch.backends.cpu.get_cpu_capability()}); bf16 would be emulated, "
            "so it is neither run nor measured")


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it, so every reported figure names the machine it came from."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
