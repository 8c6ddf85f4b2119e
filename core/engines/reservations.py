"""Memory promised to jobs that started on this host but have not grown to their peak yet.

A job checks its memory estimate against what the host has free *before* it allocates anything big.
Two jobs starting at the same moment (two workers on one host, or a pool with concurrency > 1) would
both see the same free memory and both start; the second then takes the host into swap or the OOM
killer. So each running estimate is written to a small file in a host-wide directory (``/dev/shm``:
every process on the host sees it, nothing survives a reboot), and a job starting next subtracts what
the others have promised but not yet taken (their estimate minus the growth of their resident memory
since they started). Entries of processes that died are ignored and removed.

Hand-written rather than a library: it is one directory of JSON files read at job start, and the
process table (``/proc/<pid>``) is the only other source it needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


def reservations_dir() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / "atelier-memory-reservations"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` now, or None if it is gone (or cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def pending_elsewhere(directory: Path | None = None) -> int:
    """Bytes other running jobs on this host have reserved and not yet taken."""
    directory = directory or reservations_dir()
    total = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        try:
            r = json.loads(entry.read_text())
            pid, promised, start = int(r["pid"]), int(r["bytes"]), int(r["rss_at_start"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == os.getpid():
            continue
        now = rss_bytes(pid)
        if now is None:  # its process is gone: the reservation is stale
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        total += max(0, promised - max(0, now - start))
    return total


@contextlib.contextmanager
def reserve(nbytes: int, directory: Path | None = None) -> Iterator[None]:
    """Hold a reservation of ``nbytes`` for this process while the block runs."""
    directory = directory or reservations_dir()
    path = directory / f"{os.getpid()}-{threading.get_ident()}.json"
    try:
        directory.mkdir(mode=0o1777, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "bytes": int(nbytes),
                                   "rss_at_start": rss_bytes(os.getpid()) or 0}))
        tmp.replace(path)
    except OSError:  # no shared directory: run without a reservation rather than not at all
        path = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
