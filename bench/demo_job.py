"""Where the one-click CycleGAN demo's time goes, through the real job runner.

Runs the datasets page's demo (the bundled-photo dataset, :data:`core.kinds.gan.DEMO_PARAMS`) as a job
in embedded mode (SQLite + local storage in a temporary directory, the runner in this process, as a
worker runs it) and prints the total and its split:

- compute: the training steps (forward, backward, optimizer), and the final sample/collapse checks;
- previews: rendering and encoding the sample grid the job page shows;
- data: decoding, resizing and cropping training images;
- checkpoints: saving the networks and optimizers (the resume points);
- database: progress, metric, event and lease writes;
- other: the rest (model set-up, registration, outputs).

The torch/OpenMP set-up is the worker's own (:mod:`worker.threads`, :func:`worker.tasks.configure_torch`);
``--openmp default`` skips the worker's OpenMP wait policy (what workers did before it existed).
``--busy N`` keeps N other processes spinning meanwhile: a neighbour on a shared machine (the web
server, a browser, another job), as the issue's "2 cores, one of them busy with other work".
``--threads`` overrides torch's threads; ``--params key=value`` overrides the demo's parameters.

    python bench/demo_job.py
    python bench/demo_job.py --busy 1 --openmp default      # the issue's situation, before the fix
    python bench/demo_job.py --threads 2 --params iterations=50
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEMO_SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


class Timers:
    """Seconds spent inside wrapped callables, per category; nested calls count only once (outermost)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - start
                self.calls[category] += 1
                self._depth -= 1
        return timed


def _spin() -> None:  # pragma: no cover - runs in a child until terminated
    while True:
        pass


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the worker's own choice)")
    ap.add_argument("--params", nargs="*", default=[], help="overrides of DEMO_PARAMS, key=value")
    ap.add_argument("--preview-every", type=int, default=None, help="ATELIER_PREVIEW_EVERY (default: settings')")
    ap.add_argument("--openmp", choices=("worker", "default"), default="worker",
                    help="worker: the worker's OpenMP settings (worker.threads); default: the runtime's defaults")
    ap.add_argument("--busy", type=int, default=0, help="other processes kept spinning during the job")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "atelier-demo-job",
                    help="where the job's sample grid (samples.png) is copied, to look at what it learned")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from worker.threads import prefer_passive_waiting

    openmp = prefer_passive_waiting() if args.openmp == "worker" else {}
    import torch

    from core import db, resources
    from core.datasets import build_demo_dataset
    from core.engines.gan import cyclegan, trainer
    from core.engines.gan.data import PairedData, UnpairedData
    from core.jobs import progress as progress_mod
    from core.jobs import repository as repo
    from core.jobs import runner
    from core.jobs.submit import submit_job
    from core.kinds.gan import DEMO_PARAMS
    from core.services import build_services
    from core.settings import Settings
    from worker.tasks import configure_torch

    params = dict(DEMO_PARAMS)
    for item in args.params:
        key, _, value = item.partition("=")
        params[key] = _parse_value(value)

    timers = Timers()
    with tempfile.TemporaryDirectory(prefix="atelier-demo-bench-") as tmp, ExitStack() as stack:
        overrides: dict[str, Any] = {"data_dir": Path(tmp) / "data", "device": "cpu", "vgg19_weights": "random"}
        if args.preview_every is not None:
            overrides["preview_every"] = args.preview_every
        settings = Settings(**overrides)  # type: ignore[arg-type]
        db.upgrade(settings.resolved_database_url)
        services = build_services(settings)
        sources = [ROOT / "web" / "static" / "examples" / "content" / n for n in DEMO_SOURCES]
        with resources.ScratchDir(services) as scratch:
            report = build_demo_dataset(sources, scratch / "data", layout="unpaired", size=128)
            ds = resources.add_dataset(services, name="demo", layout="unpaired", source_dir=scratch / "data",
                                       meta=report)
        job = submit_job(services, "cyclegan_train", {**params, "dataset": ds.id}, [])

        # What a worker does before a job (worker.tasks), then the category timers.
        threads = configure_torch(settings.torch_threads) if args.threads <= 0 else args.threads
        torch.set_num_threads(threads)
        patches = [
            (cyclegan.CycleGAN, "train_step", "compute"),
            (cyclegan.CycleGAN, "visualize", "compute"),
            (progress_mod.JobProgress, "flush_preview", "previews"),
            (UnpairedData, "batch", "data"),
            (PairedData, "batch", "data"),
            (trainer, "save_checkpoint", "checkpoints"),
        ]
        for name in ("update_progress", "add_event", "set_preview", "renew_lease", "is_cancel_requested",
                     "claim", "finish", "touch_worker", "put_output"):
            patches.append((repo, name, "database"))
        for owner, name, category in patches:
            stack.enter_context(mock.patch.object(owner, name, timers.wrap(category, getattr(owner, name))))

        spinners = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        start = time.perf_counter()
        try:
            outcome = runner.run_job(services, job.id, "bench:1")
        finally:
            total = time.perf_counter() - start
            for p in spinners:
                p.terminate()
        row = repo.get_job(services.sessions, job.id)
        grid = None
        for f in (row.files if row is not None else []):
            if f.direction == "output" and f.name == "samples.png":
                args.out.mkdir(parents=True, exist_ok=True)
                grid = args.out / "samples.png"
                grid.write_bytes(services.storage.read_bytes(f.path))
        services.close()

    split = {k: round(v, 2) for k, v in sorted(timers.seconds.items())}
    split["other"] = round(total - sum(timers.seconds.values()), 2)
    it = int(params.get("iterations") or 0)
    import platform

    cpu = _cpu_name()
    print(f"demo job: {outcome.status} in {total:.1f} s ({it / total:.2f} it/s overall) on {cpu} "
          f"({mp.cpu_count()} CPUs, {platform.machine()}), torch threads {threads}, OpenMP "
          f"{json.dumps(openmp) if openmp else 'runtime defaults'}, {args.busy} busy neighbour(s), "
          f"params {json.dumps(params)}")
    for category, seconds in split.items():
        calls = timers.calls.get(category, 0)
        print(f"  {category:<12} {seconds:8.2f} s  {100 * seconds / total:5.1f} %"
              + (f"  ({calls} calls)" if calls else ""))
    if grid is not None:
        print(f"  sample grid: {grid}")
    if row is not None and row.metrics:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in sorted(row.metrics.items())}
        print(f"  final metrics: {json.dumps(shown)}")
    if args.json:
        print(json.dumps({"status": outcome.status, "total_s": round(total, 2), "threads": threads,
                          "openmp": openmp, "busy": args.busy, "cpu": cpu, "params": params, "split_s": split}))
    return 0 if outcome.status == "succeeded" else 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
