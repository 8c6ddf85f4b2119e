"""Training checkpoints: written atomically, read without unpickling, and holding every RNG stream.

A checkpoint is a ``torch.save`` archive of plain containers (dicts, lists, tuples, numbers, strings) and
tensors only, so :func:`load_checkpoint` can use ``torch.load(weights_only=True)``: a file planted in the
work directory cannot execute code. RNG states are converted to tensors and lists for the same reason.

Atomicity: the archive is written to a temporary file in the same directory, flushed to disk, then
renamed over its final name; a crash leaves either the previous checkpoint or the new one, never half a
file. Older checkpoints are pruned after the new one is in place.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.atomic import write_atomically
from core.errors import JobFailure

_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")
KEEP = 2


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"ckpt_{iteration:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, newest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(directory: Path, iteration: int, state: dict[str, Any], keep: int = KEEP) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, iteration)
    write_atomically(target, lambda fh: torch.save(state, fh))
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    return target


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say which, do not guess
        raise JobFailure(f"checkpoint {Path(path).name} cannot be read safely ({exc.__class__.__name__}); "
                         f"delete it to start over") from exc
    if not isinstance(state, dict) or "iteration" not in state:
        raise JobFailure(f"{Path(path).name} is not a training checkpoint of this program")
    return state


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint, falling back to an older one if the newest cannot be read."""
    errors = []
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path)
        except JobFailure as exc:
            errors.append(str(exc))
    if errors:
        raise JobFailure(errors[0])
    return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------
# RNG states as tensors and plain lists (weights_only-loadable)
# ---------------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
