"""The update lock: work holds it shared, an update waits for it and blocks new work; the
ledger's lock: a restore waits for every connection, and none commits into a swapped file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from edge.lifecycle import busy
from edge.storage import ledger_lock
from edge.storage.db import Database, make_engine, sqlite_url

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


# -- the ledger's own lock (edge.storage.ledger_lock) --------------------------------------


def _ledger(path: Path, busy_timeout_ms: int = 30_000) -> Database:
    return Database(make_engine(sqlite_url(path), busy_timeout_ms))


def _rows(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT n FROM t ORDER BY n")]
    finally:
        conn.close()


def test_a_restore_waits_for_open_connections_and_new_ones_wait_for_it(tmp_path):
    path = tmp_path / "kiosk.db"
    db = _ledger(path)
    with db.write() as s:
        s.execute(text("CREATE TABLE t (n INTEGER)"))
    assert ledger_lock.try_exclusive(path, 0.2) is None  # a connection is open
    db.close()
    hold = ledger_lock.try_exclusive(path, 0.2)
    assert hold is not None
    try:
        late = _ledger(path, busy_timeout_ms=200)
        with pytest.raises(ledger_lock.LedgerBusy) as err, late.read() as s:
            s.execute(text("SELECT 1"))
        assert "being restored" in err.value.message
    finally:
        hold.release()
    with late.write() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
    late.close()
    assert _rows(path) == [1]


def test_a_connection_never_commits_into_a_file_swapped_under_it(tmp_path):
    path = tmp_path / "kiosk.db"
    db = _ledger(path)
    with db.write() as s:
        s.execute(text("CREATE TABLE t (n INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    # someone swaps the file by hand while the connection stays open
    moved = tmp_path / "moved.db"
    for suffix in ("", "-wal", "-shm"):
        os.replace(f"{path}{suffix}", f"{moved}{suffix}")
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE t (n INTEGER)")
    other.commit()
    other.close()
    with pytest.raises(ledger_lock.LedgerReplaced) as err, db.write() as s:
        s.execute(text("INSERT INTO t VALUES (2)"))
    assert "nothing was written" in err.value.message
    with db.write() as s:  # a new connection, to the file now in place
        s.execute(text("INSERT INTO t VALUES (3)"))
    db.close()
    assert _rows(moved) == [1]
    assert _rows(path) == [3]
