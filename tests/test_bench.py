"""The benchmarks still run and still report what the notes quote (smoke runs at tiny sizes), on both
CPU kinds: natively, and with the kernels restricted to what a CPU without AVX-512 runs.

No speed is asserted here: ratios measured on a busy 2-core test machine mean nothing. What must not
rot silently is that each bench runs both sides, says which precision each ran in, reports peak memory
in the JSON its figures are read from, and never runs or measures bf16 where the CPU would emulate it
(that made the smoke runs time out on CPUs without bf16 units).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.cpu_kinds import CPU_KINDS, env_for

pytestmark = pytest.mark.slow
PRECISIONS = {"fp32", "bf16", "fp16"}
SMOKE_SECONDS = 60  # the bound for one smoke run on a 2-core machine


def run_bench(kind: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, *args, "--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=SMOKE_SECONDS * 2, env=env_for(kind))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fast_bf16(kind: str) -> bool:
    code = "from core.engines.device import cpu_has_fast_bf16; print(cpu_has_fast_bf16())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=env_for(kind), check=True).stdout.strip()
    return out == "True"


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_gan_bench_reports_both_sides(kind: str) -> None:
    bf16 = fast_bf16(kind)
    out = run_bench(kind, "bench/gan.py", "--quick")
    for part, rate in (("training", "it_per_s"), ("translation", "images_per_s")):
        r = out[part]
        assert r[f"plain_{rate}"] > 0 and r[f"engine_{rate}"] > 0
        assert r["ratio"] == pytest.approx(r[f"engine_{rate}"] / r[f"plain_{rate}"])
        assert r["plain_precision"] == "fp32" and set(r["engine_precision"].split("+")) <= PRECISIONS
        assert r["plain_peak_rss_mb"] > 0 and r["engine_peak_rss_mb"] > 0
        assert r["engine_achieved"]["gflop_per_s"] > 0 and 0 < r["plain_achieved"]["of_matmul_peak"]
        if not bf16:
            assert "bf16" not in r["engine_precision"], f"{part} ran bf16 where it is emulated"
        assert r["floor"] == {"training": 1.5 if "bf16" in r["engine_precision"] else 1.0,
                              "translation": 2.0 if "bf16" in r["engine_precision"] else 1.0}[part]
    assert out["train_step_gflop"] > out["translate_image_gflop"] > 0
    assert out["matmul_gflop_per_s"]["fp32"] > 0
    if bf16:
        assert out["matmul_gflop_per_s"]["bf16"] > 0 and out["bf16"] and out["bf16_reason"] is None
    else:
        assert out["matmul_gflop_per_s"]["bf16"] is None and out["bf16"] is None
        assert "emulated" in out["bf16_reason"]
    assert out["cpu"]


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_style_bench_reports_both_sides(kind: str) -> None:
    bf16 = fast_bf16(kind)
    out = run_bench(kind, "bench/style_transfer.py", "--size", "64", "--steps", "20", "--threads", "1",
                    "--matmul-size", "1024")
    assert out["baseline_precision"] == "fp32" and out["engine_precision"] in PRECISIONS
    assert out["baseline_seconds"] > 0 and out["engine_seconds"] > 0 and out["baseline_loss"] > 0
    assert out["baseline_peak_bytes"] > 0 and out["engine_peak_bytes"] > 0
    assert isinstance(out["floor_met"], bool)
    assert out["matmul_fp32_flops_per_s"] > 0
    if bf16:
        assert out["matmul_bf16_flops_per_s"] > 0 and out["bf16_reason"] is None
    else:
        assert out["engine_precision"] == "fp32" and out["matmul_bf16_flops_per_s"] is None
        assert out["bf16"] is None and "emulated" in out["bf16_reason"]
    assert out["cpu"]


def test_gan_bench_refuses_bf16_where_it_is_emulated() -> None:
    proc = subprocess.run([sys.executable, "bench/gan.py", "--quick", "--amp", "bf16"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, env=env_for("without-avx512"))
    assert proc.returncode == 2 and "emulated" in proc.stderr


@pytest.mark.integration
def test_queue_bench_runs_all_three_parts_side_by_side() -> None:
    """bench/queue_bench.py at its smoke size: a private PostgreSQL and Redis, real serve/worker processes, the
    raw Celery and bare Flask baselines next to the service, and messages per job counted."""
    proc = subprocess.run([sys.executable, "bench/queue_bench.py", "--quick", "--json"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=SMOKE_SECONDS * 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpu"] and out["cores"] >= 1
    q = out["queue_overhead"]
    assert q["jobs"] >= 1 and q["overhead_p50_ms"] > 0 and q["raw_round_trip_p50_ms"] > 0 and q["compute_p50_ms"] > 0
    assert q["ratio"] == pytest.approx(q["overhead_p50_ms"] / q["raw_round_trip_p50_ms"], rel=0.01)
    assert set(q["breakdown_p50_ms"]) >= {"post", "row_to_sent", "sent_to_claimed", "claimed_to_finished"}
    assert isinstance(q["floor_met"], bool) and q["floor"] == {"max_ratio": 2.0, "max_p50_ms": 50.0}
    api = out["api"]
    for part in ("submit", "status", "bare"):
        assert api[part]["per_s"] > 0 and api[part]["p50_ms"] > 0
    assert api["status_vs_bare"] == pytest.approx(api["status"]["per_s"] / api["bare"]["per_s"], abs=0.01)
    assert set(api["floor_met"]) == {"status_vs_bare", "submits_per_s"}
    [one] = out["scaling"]
    assert one["processes"] == 1 and one["jobs_per_s"] > 0
    assert one["messages_per_job"] == pytest.approx(1.0, abs=0.2)  # one broker message per job
