"""Precision follows what the CPU's kernels do natively, on both CPU kinds."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.cpu_kinds import env_for

PROBE = """
import json, torch
from core.engines.device import cpu_has_fast_bf16, why_no_fast_bf16
from core.engines.gan.precision import choose_precision
from core.engines.style.engine import resolve_precision
print(json.dumps({"fast": cpu_has_fast_bf16(), "why": why_no_fast_bf16(),
                  "gan": choose_precision(torch.device("cpu"), "auto").name,
                  "style": str(resolve_precision("auto", torch.device("cpu")))}))
"""


def probe(kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env_for(kind), capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_without_avx512_kernels_nothing_picks_bf16() -> None:
    got = probe("without-avx512")
    assert got["fast"] is False and "emulated" in got["why"]
    assert got["gan"] == "fp32" and got["style"] == "torch.float32"


def test_native_kernels_agree_with_themselves() -> None:
    got = probe("native")
    assert (got["why"] is None) == got["fast"]
    assert got["gan"] == ("bf16" if got["fast"] else "fp32")
    assert got["style"] == ("torch.bfloat16" if got["fast"] else "torch.float32")
