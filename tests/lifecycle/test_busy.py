"""The update lock: work holds it shared, an update waits for it and blocks new work."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from edge.lifecycle import busy

HOLDER = """
import sys, time
from pathlib import Path
from edge.lifecycle import busy
with busy.hold(sys.argv[2], Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_holds_share_and_an_update_waits_for_all(tmp_path):
    with busy.hold("sale", tmp_path), busy.hold("print voucher", tmp_path):
        assert sorted(busy.in_progress(tmp_path)) == ["print voucher", "sale"]
        with pytest.raises(busy.LockTimeout) as err, busy.exclusive(tmp_path, timeout=0.2):
            pytest.fail("the update ran during a sale")
        assert "print voucher" in err.value.message and "sale" in err.value.message
    with busy.exclusive(tmp_path, timeout=0.2):
        assert busy.in_progress(tmp_path) == []


def test_update_starts_as_soon_as_the_other_process_finishes(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "dispense card"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert busy.in_progress(tmp_path) == ["dispense card"]
        threading.Timer(0.3, lambda: (proc.stdin.write("\n"), proc.stdin.flush())).start()
        start = time.monotonic()
        with busy.exclusive(tmp_path, timeout=10):
            waited = time.monotonic() - start
        assert 0.25 < waited < 5
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_releases_the_lock(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "sale"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    with busy.exclusive(tmp_path, timeout=2):
        assert busy.in_progress(tmp_path) == []  # its stale marker is gone too


def test_new_work_waits_while_an_update_runs(tmp_path):
    with (
        busy.exclusive(tmp_path, timeout=1),
        pytest.raises(busy.LockTimeout),
        busy.hold("sale", tmp_path, timeout=0.2),
    ):
        pytest.fail("a sale ran during the update")
    with busy.hold("sale", tmp_path, timeout=0.2):
        pass
