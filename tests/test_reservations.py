"""A job's memory check sees what other jobs on the host have promised but not yet taken."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from core.engines.reservations import pending_elsewhere, reserve

HOLD = """
import sys, time
from pathlib import Path
from core.engines.reservations import reserve
with reserve(int(sys.argv[2]), Path(sys.argv[1])):
    print("reserved", flush=True)
    time.sleep(30)
"""


def test_another_process_s_reservation_counts_until_it_ends(tmp_path: Path) -> None:
    from tests.conftest import REPO_ROOT

    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(3 << 30)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "reserved"
        assert 2.9 * 2**30 < pending_elsewhere(tmp_path) <= 3 * 2**30
        with reserve(1 << 30, tmp_path):  # our own reservation never counts against us
            assert pending_elsewhere(tmp_path) <= 3 * 2**30
    finally:
        child.kill()
        child.wait()
    assert pending_elsewhere(tmp_path) == 0


def test_a_dead_process_s_reservation_is_ignored_and_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    time.sleep(0.05)
    entry = tmp_path / f"{pid}-1.json"
    entry.write_text(json.dumps({"pid": pid, "bytes": 1 << 40, "rss_at_start": 0}))
    assert pending_elsewhere(tmp_path) == 0 and not entry.exists()
