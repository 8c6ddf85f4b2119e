"""Training: atomic checkpoints and *exact* resume after the process is killed, schedules, the pool."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from core.engines.gan import checkpoint as ckpt
from core.engines.gan.data import UnpairedData, unpaired_files
from core.engines.gan.optim import linear_decay
from core.engines.gan.options import TrainOptions
from core.engines.gan.pool import ImagePool
from core.engines.gan.trainer import train
from core.engines.progress import Cancelled, RecordingProgress
from core.errors import JobFailure
from tests.gan_support import REPO_ROOT, tiny_unpaired_dir

pytestmark = pytest.mark.usefixtures("single_thread")

# A training process that logs every iteration's losses as a JSON line and is slowed down a little per
# iteration (outside the maths) so the test can kill it between two checkpoints.
DRIVER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from pathlib import Path
    from core.engines.gan.data import UnpairedData, unpaired_files
    from core.engines.gan.options import TrainOptions
    from core.engines.gan.trainer import train
    from core.engines.progress import Progress

    data_dir, out_dir, log_path, delay = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    opts = TrainOptions(netG="resnet_2blocks", ngf=4, ndf=4, crop_size=24, load_size=28, batch_size=2,
                        iterations=30, checkpoint_every=10, dropout=True, pool_size=3, seed=7)
    log = open(log_path, "a")

    class Log(Progress):
        def report(self, step, total, metrics):
            log.write(json.dumps([step, metrics]) + "\\n")
            log.flush()

    a, b = unpaired_files(data_dir)
    result = train(opts, UnpairedData(a, b, opts.preprocess_spec(), opts.seed), out_dir, Log(),
                   device="cpu", on_iteration=lambda i: time.sleep(delay))
    print(json.dumps({{"resumed_from": result.resumed_from, "iterations": result.iterations}}))
""")


def _run(script: Path, data: Path, out: Path, log: Path, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(data), str(out), str(log), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _losses(log: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        step, metrics = json.loads(line)
        out[step] = metrics  # a resumed run overwrites the steps the killed one did after its checkpoint
    return out


def test_killed_training_resumes_exactly(tmp_path: Path) -> None:
    data = tiny_unpaired_dir(tmp_path / "data", short_side=32)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(repo=str(REPO_ROOT)))

    # 1. the reference: one uninterrupted run
    ref = _run(script, data, tmp_path / "ref", tmp_path / "ref.jsonl")
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    expected = _losses(tmp_path / "ref.jsonl")
    assert sorted(expected) == list(range(1, 31))

    # 2. the same run, SIGKILLed a few iterations after its first checkpoint
    log = tmp_path / "run.jsonl"
    victim = _run(script, data, tmp_path / "run", log, delay=0.1)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = len(log.read_text().splitlines()) if log.exists() else 0
        if done >= 13 and ckpt.list_checkpoints(tmp_path / "run"):
            break
        assert victim.poll() is None, victim.communicate()[1]
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = len(log.read_text().splitlines())
    assert 13 <= killed_at < 30, "the process must die mid-run, after a checkpoint"
    assert not [p for p in (tmp_path / "run").iterdir() if p.suffix == ".tmp"]

    # 3. run again: it continues from the newest checkpoint, not from zero
    resumed = _run(script, data, tmp_path / "run", log)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed_from"] in (10, 20) and summary["resumed_from"] <= killed_at
    assert summary["iterations"] == 30
    got = _losses(log)
    assert sorted(got) == list(range(1, 31))
    # identical losses after the checkpoint: same batches, dropout masks, pool draws, optimizer state
    for step in range(summary["resumed_from"] + 1, 31):
        assert got[step] == expected[step], f"iteration {step} differs after resume"


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt.save_checkpoint(tmp_path, 10, {"iteration": 10, "w": torch.ones(3)})
    real_save = torch.save

    def dying_save(obj, fh):  # writes part of the file, then the process "crashes"
        real_save(obj, fh)
        fh.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 20, {"iteration": 20, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_000000010.pt"]
    path, state = ckpt.latest_checkpoint(tmp_path)
    assert state["iteration"] == 10 and torch.equal(state["w"], torch.ones(3))
    for i in (20, 30, 40):
        ckpt.save_checkpoint(tmp_path, i, {"iteration": i})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_000000040.pt", "ckpt_000000030.pt"]


def test_rng_states_roundtrip_through_weights_only(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = ckpt.capture_rng()
    ckpt.save_checkpoint(tmp_path, 1, {"iteration": 1, "rng": state})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng(ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path)[0])["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def _tiny(tmp_path: Path, **kw) -> tuple[TrainOptions, UnpairedData]:
    opts = TrainOptions(**{"netG": "resnet_2blocks", "ngf": 4, "ndf": 4, "crop_size": 24, "load_size": 28,
                           "iterations": 4, "checkpoint_every": 2, **kw})
    a, b = unpaired_files(tiny_unpaired_dir(tmp_path / "data", short_side=32))
    return opts, UnpairedData(a, b, opts.preprocess_spec(), opts.seed)


def test_resume_refuses_other_options_but_allows_more_iterations(tmp_path: Path) -> None:
    opts, data = _tiny(tmp_path)
    first = train(opts, data, tmp_path / "ck", device="cpu")
    assert first.iterations == 4 and first.resumed_from is None
    with pytest.raises(JobFailure, match="other options .*ngf"):
        train(TrainOptions(**{**opts.to_dict(), "ngf": 8}), data, tmp_path / "ck", device="cpu")
    progress = RecordingProgress()
    longer = train(TrainOptions(**{**opts.to_dict(), "iterations": 6}), data, tmp_path / "ck", progress, device="cpu")
    assert longer.resumed_from == 4 and [s[0] for s in progress.steps] == [5, 6]
    assert any("iterations changed" in m for m in progress.messages)


def test_progress_previews_and_cancel(tmp_path: Path) -> None:
    opts, data = _tiny(tmp_path, iterations=6)
    progress = RecordingProgress(preview_every=2)
    result = train(opts, data, tmp_path / "ck", progress, device="cpu")
    assert [s[0] for s in progress.steps] == list(range(1, 7)) and progress.steps[-1][1] == 6
    assert set(progress.steps[0][2]) == {"D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"}
    assert [p[0] for p in progress.previews] == [2, 4, 6]
    assert progress.previews[0][1].size == (24 * 3 + 4, 24 * 2 + 2)  # real A, fake B, rec A / B side
    assert result.final_sample(data).size[0] == 24 * 6 + 10
    with pytest.raises(Cancelled):
        train(TrainOptions(**{**opts.to_dict(), "iterations": 9}), data, tmp_path / "ck",
              RecordingProgress(cancel_after=1), device="cpu")


def test_linear_decay_schedule() -> None:
    f = linear_decay(total=10, decay_fraction=0.5)
    assert [round(f(i), 4) for i in range(11)] == [1, 1, 1, 1, 1, 1, 0.8333, 0.6667, 0.5, 0.3333, 0.1667]
    assert linear_decay(10, 0.0)(9) == 1.0


def test_image_pool_state_roundtrip() -> None:
    pool = ImagePool(3, seed=1)
    for i in range(5):
        pool.query(torch.full((2, 3, 4, 4), float(i)))
    state = pool.state_dict()
    other = ImagePool(3, seed=99)
    other.load_state_dict(state, torch.device("cpu"))
    x = torch.full((4, 3, 4, 4), 9.0)
    assert torch.equal(pool.query(x), other.query(x))
    assert ImagePool(0).query(x) is x


def test_a_stopped_training_checkpoints_so_a_retry_continues(tmp_path: Path) -> None:
    """A cancel or the time limit stops training at the next iteration, after writing a checkpoint."""
    opts, data = _tiny(tmp_path, iterations=8)
    opts = TrainOptions(**{**opts.to_dict(), "checkpoint_every": 0})  # only the stop writes one
    with pytest.raises(Cancelled):
        train(opts, data, tmp_path / "ck", RecordingProgress(cancel_after=3), device="cpu")
    path, state = ckpt.latest_checkpoint(tmp_path / "ck")
    assert state["iteration"] == 3
    progress = RecordingProgress()
    again = train(opts, data, tmp_path / "ck", progress, device="cpu")
    assert again.resumed_from == 3 and [s[0] for s in progress.steps] == list(range(4, 9))


class _DurableProgress(RecordingProgress):
    """Counts a step as stored only once ``flush`` was called after it was reported (as the job layer,
    which writes progress at most once per interval, does)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored = 0

    def flush(self) -> None:
        self.stored = len(self.steps)


def test_every_step_before_a_checkpoint_is_flushed_first(tmp_path: Path) -> None:
    """A resume continues after the newest checkpoint: the curves up to it must already be stored, or the
    steps between the last progress write and the checkpoint are lost when the worker dies."""
    opts, data = _tiny(tmp_path, iterations=5)
    progress = _DurableProgress()
    seen: list[tuple[int, int]] = []
    real_save = ckpt.save_checkpoint

    def save(directory, iteration, state):  # type: ignore[no-untyped-def]
        seen.append((iteration, progress.stored))
        return real_save(directory, iteration, state)

    import core.engines.gan.trainer as trainer_module
    original = trainer_module.save_checkpoint
    trainer_module.save_checkpoint = save
    try:
        train(opts, data, tmp_path / "ck", progress, device="cpu")
    finally:
        trainer_module.save_checkpoint = original
    assert seen == [(2, 2), (4, 4), (5, 5)]
