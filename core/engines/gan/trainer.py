"""The training loop shared by CycleGAN and pix2pix: data, checkpoints, exact resume, progress.

``train`` resumes from the newest checkpoint in ``checkpoint_dir`` when there is one. A checkpoint holds
the networks, optimizers, schedulers, image pools, grad scaler, every RNG stream (torch, CUDA, numpy,
python), the iteration, the epoch and the position inside it. Data order and augmentation are derived
from (seed, epoch, position) (see :mod:`core.engines.gan.data`), so the resumed run performs exactly the
steps the uninterrupted run would have: same batches, same dropout masks, same pool draws, same losses.

Progress: ``report`` after every iteration with the loss terms, a sample grid every
``progress.preview_every`` iterations, and a log line with speed and ETA about every 30 seconds. On
CUDA the loss values are fetched in groups (every 25 iterations, and at previews/checkpoints/the end)
so the step itself never waits for the GPU.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from core.engines.device import resolve_device
from core.engines.gan import diagnose
from core.engines.gan.checkpoint import capture_rng, latest_checkpoint, restore_rng, save_checkpoint
from core.engines.gan.cyclegan import CycleGAN
from core.engines.gan.data import to_model_range
from core.engines.gan.options import RESUMABLE_CHANGES, TrainOptions
from core.engines.gan.pix2pix import Pix2Pix
from core.engines.gan.precision import Precision, choose_precision
from core.engines.progress import Cancelled, Progress
from core.errors import JobFailure

#: Explicit registry of training families (no string dispatch).
FAMILIES: dict[str, type] = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix}
CHECKPOINT_FORMAT = "atelier.gan.checkpoint/1"


class TrainingData(Protocol):
    def __len__(self) -> int: ...
    def fingerprint(self) -> str: ...
    def batch(self, epoch: int, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class TrainResult:
    family: str
    iterations: int  # the run's iteration count when it stopped (including those before a resume)
    seconds: float  # wall time of this process's loop
    it_per_s: float  # after warm-up, this process only
    losses: dict[str, float]  # the last iteration's loss terms
    precision: str
    device: str
    resumed_from: int | None
    model: Any = field(repr=False)  # CycleGAN | Pix2Pix, for generators() and sample_grid()

    def final_sample(self, data: "TrainingData", n: int = 4) -> Image.Image:
        """The trained generators on the first ``n`` samples of epoch 0, in eval mode: what the
        registered model will produce. Deterministic, and available even when a resumed run had no
        iterations left to do."""
        opts, precision = self.model.opts, self.model.precision
        a_u8, b_u8 = data.batch(0, 0, min(n, len(data)))
        if opts.family == "pix2pix" and opts.direction == "BtoA":
            a_u8, b_u8 = b_u8, a_u8
        fmt = precision.memory_format()
        real_A = to_model_range(a_u8.to(precision.device)).contiguous(memory_format=fmt)
        real_B = to_model_range(b_u8.to(precision.device)).contiguous(memory_format=fmt)
        return self.model.visualize(real_A, real_B)

    def generators(self):
        return self.model.generators()

    def collapse_warnings(self, data: "TrainingData", n: int = 8) -> list[str]:
        """Sentences for the user when a generator collapsed to the identity or to a constant (see
        :mod:`core.engines.gan.diagnose`), measured on the first ``n`` samples of epoch 0."""
        opts, precision = self.model.opts, self.model.precision
        a_u8, b_u8 = data.batch(0, 0, min(n, len(data)))
        if opts.family == "pix2pix" and opts.direction == "BtoA":
            a_u8, b_u8 = b_u8, a_u8
        fmt = precision.memory_format()
        real = {"A": to_model_range(a_u8.to(precision.device)).contiguous(memory_format=fmt),
                "B": to_model_range(b_u8.to(precision.device)).contiguous(memory_format=fmt)}
        reports = []
        with precision.autocast():
            for direction, (net, _) in self.generators().items():
                src, tgt = ("A", "B") if direction == "AtoB" or opts.family == "pix2pix" else ("B", "A")
                reports.append(diagnose.measure(direction, net, real[src], real[tgt]))
        return diagnose.collapse_warnings(reports, self.iterations)


class _LossSink:
    """Turns per-iteration loss tensors into ``progress.report`` calls, batching device->host copies."""

    def __init__(self, progress: Progress, total: int, flush_every: int) -> None:
        self.progress, self.total, self.flush_every = progress, total, flush_every
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.last: dict[str, float] = {}

    def add(self, iteration: int, losses: dict[str, torch.Tensor]) -> None:
        self.pending.append((iteration, losses))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        names = list(self.pending[0][1])
        values = torch.stack([torch.stack([l[n] for n in names]) for _, l in self.pending]).cpu().tolist()
        for (it, _), row in zip(self.pending, values):
            self.last = dict(zip(names, row))
            self.progress.report(it, self.total, self.last)
        self.pending.clear()


def _check_resumable(ckpt: dict[str, Any], opts: TrainOptions, fingerprint: str, where: Path) -> list[str]:
    saved = ckpt.get("options", {})
    current = opts.to_dict()
    diff = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} there, {current[k]!r} now" for k in diff[:4])
        raise JobFailure(f"the checkpoints in {where} belong to a run with other options ({details}); "
                         "use another output directory, or delete the checkpoints to start over")
    if ckpt.get("data_fingerprint") != fingerprint:
        raise JobFailure(f"the checkpoints in {where} were made with other training images; use another "
                         "output directory, or delete the checkpoints to start over")
    return [f"{k} changed from {saved.get(k)!r} to {current[k]!r}"
            for k in sorted(RESUMABLE_CHANGES) if saved.get(k) != current[k]]


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def train(opts: TrainOptions, data: TrainingData, checkpoint_dir: Path, progress: Progress | None = None,
          device: str = "auto", precision: Precision | None = None,
          on_iteration: Callable[[int], None] | None = None, log_every_s: float = 30.0,
          on_checkpoint: Callable[[Path], None] | None = None) -> TrainResult:
    """Train (or continue training) ``opts.family`` on ``data``; checkpoints go to ``checkpoint_dir``.

    ``on_iteration(i)`` is called after each iteration (benchmarks and tests use it); ``on_checkpoint(path)``
    after each checkpoint is complete on disk (the job layer copies it to storage, so a resume on another
    host finds it).
    """
    progress = progress or Progress()
    precision = precision or choose_precision(resolve_device(device), opts.amp)
    dev = precision.device
    total = opts.total_iterations(len(data))
    fp = data.fingerprint()

    # Global streams are seeded for a fresh run (dropout draws from torch's); a resume restores them.
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed % 2**32)
    random.seed(opts.seed)
    model = FAMILIES[opts.family](opts, precision, total)
    iteration, epoch, pos, resumed_from = 0, 0, 0, None
    sink_last: dict[str, float] = {}
    found = latest_checkpoint(checkpoint_dir)
    if found is not None:
        path, ckpt = found
        for note in _check_resumable(ckpt, opts, fp, Path(checkpoint_dir)):
            progress.log(f"resuming with {note}")
        model.load_state_dict(ckpt["model"])
        restore_rng(ckpt["rng"])
        iteration, epoch, pos = int(ckpt["iteration"]), int(ckpt["epoch"]), int(ckpt["epoch_pos"])
        resumed_from = iteration
        sink_last = dict(ckpt.get("losses", {}))
        progress.log(f"resuming from checkpoint {path.name} at iteration {iteration} of {total}")
    progress.log(f"training {opts.family}: {opts.netG} (ngf {opts.ngf}, {opts.norm} norm), {opts.netD} "
                 f"discriminator, {opts.crop_size} px, batch {opts.batch_size}, {total} iterations on {dev.type} "
                 f"({precision.name}), {len(data)} samples per epoch")

    cuda = dev.type == "cuda"
    if cuda:  # fixed crop sizes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    sink = _LossSink(progress, total, flush_every=25 if cuda else 1)
    sink.last = sink_last
    fmt = precision.memory_format()

    def checkpoint() -> None:
        sink.flush()
        progress.flush()  # the stored curves reach the checkpoint, so a resume leaves no gap
        state = {"format": CHECKPOINT_FORMAT, "options": opts.to_dict(), "data_fingerprint": fp,
                 "iteration": iteration, "epoch": epoch, "epoch_pos": pos, "model": model.state_dict(),
                 "rng": capture_rng(), "losses": dict(sink.last)}
        saved = save_checkpoint(checkpoint_dir, iteration, state)
        if on_checkpoint is not None:
            on_checkpoint(saved)

    warmup = min(3, max(0, total - iteration - 1))
    start = time.perf_counter()
    warm_iteration = iteration  # speed is measured from iteration warm_iteration + warmup on
    t_warm = start
    last_log = start
    while iteration < total:
        try:
            progress.check_cancel()
        except Cancelled:  # a cancel or the time limit: keep the work done so far for a retry
            if iteration != resumed_from and iteration > 0:
                checkpoint()
            raise
        a_u8, b_u8 = data.batch(epoch, pos, opts.batch_size)
        if opts.family == "pix2pix" and opts.direction == "BtoA":
            a_u8, b_u8 = b_u8, a_u8
        if cuda:  # page-locked buffers make the host->device copies truly asynchronous
            a_u8, b_u8 = a_u8.pin_memory(), b_u8.pin_memory()
        real_A = to_model_range(a_u8.to(dev, non_blocking=True)).contiguous(memory_format=fmt)
        real_B = to_model_range(b_u8.to(dev, non_blocking=True)).contiguous(memory_format=fmt)
        losses = model.train_step(real_A, real_B)
        iteration += 1
        pos += opts.batch_size
        if pos >= len(data):
            epoch, pos = epoch + 1, 0
        sink.add(iteration, losses)
        if on_iteration is not None:
            on_iteration(iteration)
        if progress.preview_every and iteration % progress.preview_every == 0:
            sink.flush()
            progress.preview(iteration, model.sample_grid)
        if opts.checkpoint_every and iteration % opts.checkpoint_every == 0 and iteration < total:
            checkpoint()
        now = time.perf_counter()
        if iteration - warm_iteration == warmup:
            t_warm = now
        if now - last_log >= log_every_s and iteration > warm_iteration + warmup:
            rate = (iteration - warm_iteration - warmup) / max(now - t_warm, 1e-9)
            progress.log(f"iteration {iteration}/{total} (epoch {epoch + 1}), {rate:.2f} it/s, "
                         f"ETA {_fmt_eta((total - iteration) / max(rate, 1e-9))}")
            last_log = now
    if dev.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    sink.flush()
    if resumed_from != iteration:  # the final state, unless this run did nothing
        checkpoint()
    measured = iteration - warm_iteration - warmup
    it_per_s = measured / (end - t_warm) if measured > 0 and end > t_warm else 0.0
    return TrainResult(opts.family, iteration, end - start, it_per_s, dict(sink.last), precision.name,
                       dev.type, resumed_from, model)
