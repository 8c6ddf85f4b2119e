"""How a worker's torch threads wait: passively, so a busy neighbour does not multiply a job's time.

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp in the Linux wheels) whose threads, by default,
spin for a while at every barrier before sleeping. A training step of small networks passes thousands of
barriers, so when another process holds one of the cores (the web server, a browser, another job), the
spinning thread and the thread that has work take turns on one core and every barrier waits a scheduler
slice. Measured with ``bench/demo_job.py`` on a 2-core AMD EPYC with one core kept busy: the demo job ran
at 1.2 it/s with the default policy and 4.2 it/s with ``OMP_WAIT_POLICY=PASSIVE`` (4.6 it/s on one
thread); with nothing else running the passive policy costs nothing measurable at these sizes.

The OpenMP runtime reads its environment once, when torch is first imported, so this must run in the
worker's main process before the pool forks and before anything imports torch. An operator who exports
``OMP_WAIT_POLICY`` (or sets ``GOMP_SPINCOUNT``) keeps their choice.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: What the worker sets unless the operator chose otherwise.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def prefer_passive_waiting(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`OPENMP_DEFAULTS` in ``environ`` (the process's own by default) where not already set;
    returns what it set. Too late once torch is loaded (the runtime has read its settings): then it
    sets nothing, and the caller can log that."""
    env = os.environ if environ is None else environ
    if environ is None and "torch" in sys.modules:
        return {}
    if "GOMP_SPINCOUNT" in env:
        return {}
    applied = {}
    for name, value in OPENMP_DEFAULTS.items():
        if name not in env:
            env[name] = value
            applied[name] = value
    return applied
