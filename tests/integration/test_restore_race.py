"""Restores racing console writers: no acknowledged operation is committed into a ledger file
that a restore has moved to ``replaced/``.

A restore swaps the database file under the processes that have it open. A console command
that opened the old file before the swap and committed after it would answer "done" for an
accrual that is in no live ledger. The restore therefore waits for every connection to close
and no process opens the ledger until it has finished (``edge.storage.ledger_lock``).

Every process here is real: ``kiosk backup restore`` as a technician types it, and either
``kiosk points accrue`` by the dozen or a writer that opens the ledger while a restore is
under way (``restore_writer``). The racing commands are forked from one process that imported
the product once (:mod:`tests.forked_kiosk`), so they start within moments, as on a device
whose commands are already in the page cache.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.lifecycle.backup import create_backup
from edge.services import members
from tests.forked_kiosk import KioskForks

pytestmark = pytest.mark.slow

KIOSK = Path(sys.executable).with_name("kiosk")
ROOT = Path(__file__).resolve().parents[2]
RESTORES = 4
IN_FLIGHT = 5  # console accruals running at any moment
AFTER_LAST = 6  # accruals started after the last restore finished


def _env() -> dict[str, str]:
    """The environment without the developer's own KIOSK_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}


def _kiosk(data: Path, *args: str) -> list[str]:
    return [str(KIOSK), "--data-dir", str(data), *args]


@pytest.fixture
def forks() -> Iterator[KioskForks]:
    with KioskForks(_env()) as server:
        yield server


def _refs(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT ref FROM ledger_entry WHERE kind = 'purchase'").fetchall()
    conn.close()
    return {r[0] for r in rows}


def _device(tmp_path: Path) -> tuple[Path, str, Path]:
    """A stopped kiosk with one member, and a backup of it (the one every restore puts back)."""
    data = tmp_path / "data"
    app = AppContext.open(data)
    try:
        card = members.register_member(app, "13900139000", True).card_no
        for i in range(40):  # some bulk, so that a restore takes a moment to verify
            members.register_member(app, f"1370013{i:04d}", True)
    finally:
        app.close()
    info = create_backup(data / "kiosk.db", data / "backups", store_id="S001", device_id="K001")
    return data, card, info.path


def test_a_writer_that_opened_the_ledger_during_a_restore_writes_into_the_restored_one(tmp_path):
    data, card, backup = _device(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.restore_writer", str(data), card, "LATE-1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        restore = subprocess.run(
            _kiosk(data, "--json", "backup", "restore", str(backup)),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=300,
        )
        assert restore.returncode == 0, restore.stderr
        replaced = [Path(p) for p in json.loads(restore.stdout)["replaced"]]
        # the writer saw the restore under way and opened the ledger (before the swap, if
        # nothing stopped it); only now, the restore finished, does it make its accrual
        assert writer.stdout.readline().strip() == "opened"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        ack = json.loads(writer.stdout.readline())
        assert writer.wait(timeout=120) == 0
    finally:
        writer.kill()
        writer.wait()
    assert ack["receipt_id"] == "LATE-1"
    assert "LATE-1" in _refs(data / "kiosk.db"), "acknowledged, but not in the live ledger"
    assert "LATE-1" not in _refs(replaced[0])
    verify = subprocess.run(_kiosk(data, "ledger", "verify"), capture_output=True, env=_env())
    assert verify.returncode == 0


@dataclass
class Accrual:
    ref: str
    started: float  # monotonic, before the process was started
    ended: float = 0.0  # monotonic, once it had exited
    code: int = -1
    out: str = ""
    err: str = ""


@dataclass
class Restore:
    started: float
    ended: float
    code: int
    out: str
    err: str
    seen: float | None = None  # when its unpacked backup was first seen in the data directory


def test_console_accruals_racing_restores_are_never_acknowledged_into_a_replaced_ledger(
    tmp_path, forks
):
    data, card, backup = _device(tmp_path)
    accruals: list[Accrual] = []
    finished = threading.Condition()
    slots = threading.Semaphore(IN_FLIGHT)
    stop = threading.Event()

    def accrue(accrual: Accrual) -> None:
        try:
            args = ["points", "accrue", "--card", card, "--amount-cents", "10000"]
            done = forks.run("--data-dir", str(data), *args, "--ref", accrual.ref, "--json")
            accrual.ended = time.monotonic()  # before its code, which the waits look for
            accrual.code, accrual.out, accrual.err = done.returncode, done.stdout, done.stderr
        finally:
            slots.release()
            with finished:
                finished.notify_all()

    def lanes() -> None:
        n = 0
        while not stop.is_set():
            if not slots.acquire(timeout=0.1):
                continue
            accrual = Accrual(f"RACE-{n:04d}", time.monotonic())
            n += 1
            accruals.append(accrual)
            threading.Thread(target=accrue, args=(accrual,), daemon=True).start()

    candidates: dict[str, float] = {}

    def watch() -> None:  # when each restore's unpacked backup first appears
        while not stop.is_set():
            for path in data.glob(".restore-*.db"):
                candidates.setdefault(path.name, time.monotonic())
            time.sleep(0.002)

    def wait_for_done(n: int) -> None:
        with finished:
            assert finished.wait_for(
                lambda: sum(a.code >= 0 for a in accruals) >= n, timeout=300
            ), "the accruals stopped"

    threads = [threading.Thread(target=lanes), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    restores: list[Restore] = []
    untouched: dict[Path, tuple[int, int]] = {}
    try:
        for _ in range(RESTORES):
            wait_for_done(len(restores) * IN_FLIGHT + 2)  # some accruals between restores
            started = time.monotonic()
            done = forks.run("--data-dir", str(data), "--json", "backup", "restore", str(backup))
            restores.append(
                Restore(started, time.monotonic(), done.returncode, done.stdout, done.stderr)
            )
            if done.returncode == 0:
                for name in json.loads(done.stdout)["replaced"]:
                    if not name.endswith("-shm"):  # a reader may touch it; never a commit
                        st = Path(name).stat()
                        untouched[Path(name)] = (st.st_size, st.st_mtime_ns)
        last = len(accruals)
        wait_for_done(last + AFTER_LAST)
    finally:
        stop.set()
        for t in threads:
            t.join()
        with finished:
            assert finished.wait_for(lambda: all(a.code >= 0 for a in accruals), timeout=300)

    for path, before in untouched.items():
        st = path.stat()
        assert (st.st_size, st.st_mtime_ns) == before, f"{path} was written after it was replaced"
    acknowledged = {a.ref: a for a in accruals if a.code == 0}
    assert all(json.loads(a.out)["receipt_id"] == ref for ref, a in acknowledged.items())
    # the ledger each generation wrote into: the file restore j replaced holds what came
    # before it, the live one what came after the last
    restored = [r for r in restores if r.code == 0]
    generations = [_refs(Path(json.loads(r.out)["replaced"][0])) for r in restored]
    generations.append(_refs(data / "kiosk.db"))
    for restore in restored:
        seen = [t for t in candidates.values() if restore.started <= t <= restore.ended]
        assert len(seen) == 1, "each restore unpacked its backup once"
        restore.seen = seen[0]
    for ref, accrual in acknowledged.items():
        found = [g for g, refs in enumerate(generations) if ref in refs]
        assert len(found) == 1, f"{ref} is in ledgers {found}"
        # an accrual started once a restore was under way waited for it: it is in the
        # ledger that restore put in place, or a later one, never in the one it replaced
        for j, restore in enumerate(restored):
            assert restore.seen is not None
            if accrual.started > restore.seen:
                assert found[0] > j, f"{ref} started during restore {j + 1}, went to the old file"
    failed = [(r.code, r.err) for r in restores if r.code != 0]
    assert not failed, f"{len(failed)} of {RESTORES} restores failed, e.g. {failed[0]}"
    refused = [(a.ref, a.err) for a in accruals if a.code != 0]
    assert not refused, f"{len(refused)} of {len(accruals)} accruals failed, e.g. {refused[0]}"
    assert len(acknowledged) >= RESTORES * IN_FLIGHT
    # every accrual started after the last restore began is in the live ledger at the end
    assert any(a.started > restores[-1].ended for a in acknowledged.values())
    # and they did race: every restore ran while accruals were under way
    for j, restore in enumerate(restored):
        racing = [a for a in accruals if a.started < restore.ended and a.ended > restore.started]
        assert len(racing) >= IN_FLIGHT, f"restore {j + 1} raced {len(racing)} accruals"
    verify = subprocess.run(_kiosk(data, "ledger", "verify"), capture_output=True, env=_env())
    assert verify.returncode == 0
