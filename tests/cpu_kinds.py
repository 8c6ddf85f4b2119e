"""The two CPU kinds this project's machines come in, reproducible on either.

Some machines are Intel Xeons with AMX/AVX512-BF16, others AMD EPYCs without AVX-512 at all, where bf16
is emulated. ``WITHOUT_AVX512`` restricts PyTorch's and oneDNN's kernels to AVX2 (the variables both
libraries read at start-up), so a child process run with it takes the code paths and the arithmetic of
a CPU without AVX-512 on any x86-64 machine: bf16 matmuls drop to ~1 GFLOP/s, as on such a CPU, and
``cpu_has_fast_bf16()`` answers False.
"""

from __future__ import annotations

import os
from pathlib import Path

WITHOUT_AVX512 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}



def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (unknown counts as yes: then both kinds run)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return " avx512f" in flags


#: Parameter ids and extra environment of the tests that run on both kinds. On a CPU without AVX-512 the
#: native run already is the other kind (same kernels, same arithmetic), so it runs once, as "native".
CPU_KINDS = {"native": {}, "without-avx512": WITHOUT_AVX512} if has_avx512() else {"native": {}}


def env_for(kind: str) -> dict[str, str]:
    return {**os.environ, **{"native": {}, "without-avx512": WITHOUT_AVX512}[kind]}
