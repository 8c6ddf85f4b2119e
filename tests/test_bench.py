"""The benchmarks still run and still report what the notes quote (smoke runs at tiny sizes).

No speed is asserted here: ratios measured on a busy 2-core test machine mean nothing. What must not
rot silently is that each bench runs both sides, says which precision each ran in and reports peak
memory, in the JSON its figures are read from.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
PRECISIONS = {"fp32", "bf16", "fp16"}


def run_bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, *args, "--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gan_bench_reports_both_sides() -> None:
    out = run_bench("bench/gan.py", "--quick")
    for part, rate in (("training", "it_per_s"), ("translation", "images_per_s")):
        r = out[part]
        assert r[f"plain_{rate}"] > 0 and r[f"engine_{rate}"] > 0
        assert r["ratio"] == pytest.approx(r[f"engine_{rate}"] / r[f"plain_{rate}"])
        assert r["plain_precision"] == "fp32" and set(r["engine_precision"].split("+")) <= PRECISIONS
        assert r["plain_peak_rss_mb"] > 0 and r["engine_peak_rss_mb"] > 0
        assert r["engine_achieved"]["gflop_per_s"] > 0 and 0 < r["plain_achieved"]["of_matmul_peak"]
    assert out["train_step_gflop"] > out["translate_image_gflop"] > 0
    assert set(out["matmul_gflop_per_s"]) == {"fp32", "bf16"}
    assert out["training"]["floor"] == 1.5 and out["translation"]["floor"] == 2.0


def test_style_bench_reports_both_sides() -> None:
    out = run_bench("bench/style_transfer.py", "--size", "64", "--steps", "20", "--threads", "1")
    assert out["baseline_precision"] == "fp32" and out["engine_precision"] in PRECISIONS
    assert out["baseline_seconds"] > 0 and out["engine_seconds"] > 0 and out["baseline_loss"] > 0
    assert out["baseline_peak_bytes"] > 0 and out["engine_peak_bytes"] > 0
    assert isinstance(out["floor_met"], bool)
