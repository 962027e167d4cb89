"""What the ledger's durability settings cost: BEGIN IMMEDIATE vs deferred BEGIN, FULL vs NORMAL.

Run ``python -m bench.write_cost [--dir DIR]`` (``python -m bench.lookup`` runs it too). Three
measurements, each on a fresh database in WAL mode:

1. one writer, the real ``accrue_purchase`` use case (purchase, lot, ledger entry, audit
   record, outbox event in one transaction), for each of the four combinations;
2. one writer, a bare two-statement SQLite transaction through sqlite3, for the four
   combinations: the storage cost without Python and ORM overhead;
3. four processes accruing at once: IMMEDIATE against DEFERRED (both FULL), counting the
   transactions that fail with "database is locked".

``synchronous=FULL`` fsyncs the WAL at every commit; ``NORMAL`` only at checkpoints, so a power
cut may lose the last commits (never corrupt the file). The difference is the price of an fsync,
which depends on the storage: measure on the device's own SD card or SSD.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from edge.app import AppContext
from edge.config import KioskConfig
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.storage.db import Database, make_engine, sqlite_url

BEGINS = ("IMMEDIATE", "DEFERRED")
SYNCS = ("FULL", "NORMAL")


def open_app(data_dir: Path, begin: str = "IMMEDIATE", sync: str = "FULL") -> AppContext:
    """The appliance's context with its engine swapped for one with the given settings."""
    app = AppContext.open(data_dir, config=KioskConfig())
    app.db.close()
    engine = make_engine(sqlite_url(data_dir / "kiosk.db"), app.config.database.busy_timeout_ms)

    @event.listens_for(engine, "connect")
    def _sync(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA synchronous = {sync}")  # after make_engine's own hook

    if begin == "DEFERRED":
        engine = engine.execution_options(sqlite_begin="DEFERRED")
    app.db = Database(engine)
    return app


@dataclass(frozen=True)
class Rate:
    label: str
    transactions: int
    seconds: float
    failed: int = 0

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0

    @property
    def ms(self) -> float:
        return 1000 * self.seconds / self.transactions if self.transactions else 0.0


def service_rate(root: Path, begin: str, sync: str, count: int) -> Rate:
    data_dir = root / f"service-{begin}-{sync}".lower()
    app = open_app(data_dir, begin, sync)
    try:
        card = register_member(app, "13700000000", consent=True, actor="bench").card_no
        for i in range(20):  # warm-up
            accrue_purchase(app, card, 1_000, f"W-{i}", actor="bench")
        started = time.perf_counter()
        for i in range(count):
            accrue_purchase(app, card, 1_000 + i, f"B-{i}", actor="bench")
        return Rate(f"{begin:<9} {sync:<6}", count, time.perf_counter() - started)
    finally:
        app.close()


def raw_rate(root: Path, begin: str, sync: str, count: int) -> Rate:
    db = sqlite3.connect(root / f"raw-{begin}-{sync}.db".lower(), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {sync}")
        db.execute("CREATE TABLE balance (id INTEGER PRIMARY KEY, points INTEGER)")
        db.execute("CREATE TABLE entry (id INTEGER PRIMARY KEY, points INTEGER, ref TEXT)")
        db.execute("INSERT INTO balance VALUES (1, 0)")
        statement = "BEGIN IMMEDIATE" if begin == "IMMEDIATE" else "BEGIN"
        started = time.perf_counter()
        for i in range(count):
            db.execute(statement)
            db.execute("UPDATE balance SET points = points + 1 WHERE id = 1")
            db.execute("INSERT INTO entry (points, ref) VALUES (1, ?)", (f"R-{i}",))
            db.execute("COMMIT")
        return Rate(f"{begin:<9} {sync:<6}", count, time.perf_counter() - started)
    finally:
        db.close()


def _contender(
    data_dir: str, begin: str, card: str, worker: int, count: int, barrier: Any, results: Any
) -> None:
    app = open_app(Path(data_dir), begin, "FULL")
    ok = failed = 0
    try:
        barrier.wait()
        for i in range(count):
            try:
                accrue_purchase(app, card, 1_000 + i, f"C-{worker}-{i}", actor="bench")
                ok += 1
            except OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                failed += 1
    finally:
        app.close()
        results.put((ok, failed, time.perf_counter()))


def contended_rate(root: Path, begin: str, processes: int, count: int) -> Rate:
    """``processes`` writers at once, each on its own member (no logical conflict at all)."""
    data_dir = root / f"contended-{begin}".lower()
    app = open_app(data_dir)
    try:
        cards = [
            register_member(app, f"1360000{i:04d}", consent=True, actor="bench").card_no
            for i in range(processes)
        ]
    finally:
        app.close()
    ctx = multiprocessing.get_context("fork")  # no connection is open in this process now
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_contender,
            args=(str(data_dir), begin, cards[w], w, count, barrier, results),
        )
        for w in range(processes)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    outcomes = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    ok = sum(o[0] for o in outcomes)
    failed = sum(o[1] for o in outcomes)
    seconds = max(o[2] for o in outcomes) - started
    return Rate(f"{begin:<9} FULL  ", ok, seconds, failed)


def run(root: Path, service_count: int = 1_000, raw_count: int = 2_000) -> None:
    print("\nwrite cost (WAL; each figure on a fresh database)")
    print(f"  one writer, accrue_purchase use case ({service_count} transactions each)")
    print(f"    {'BEGIN':<9} {'sync':<6} {'tx/s':>8} {'ms/tx':>7}")
    service = {(b, s): service_rate(root, b, s, service_count) for b in BEGINS for s in SYNCS}
    for rate in service.values():
        print(f"    {rate.label} {rate.per_second:>8.0f} {rate.ms:>7.2f}")
    print(f"  one writer, bare SQLite transaction: UPDATE + INSERT ({raw_count} each)")
    raw = {(b, s): raw_rate(root, b, s, raw_count) for b in BEGINS for s in SYNCS}
    for rate in raw.values():
        print(f"    {rate.label} {rate.per_second:>8.0f} {rate.ms:>7.3f}")
    processes, count = 4, 100
    print(f"  {processes} processes at once, {count} accruals each, each on its own member")
    print(f"    {'BEGIN':<9} {'sync':<6} {'tx/s':>8} {'failed':>7}  (tx/s: committed ones)")
    for begin in BEGINS:
        rate = contended_rate(root, begin, processes, count)
        print(
            f"    {rate.label} {rate.per_second:>8.0f} {rate.failed:>7}"
            f"  of {processes * count} ('database is locked')"
        )
    full = service["IMMEDIATE", "FULL"]
    normal = service["IMMEDIATE", "NORMAL"]
    deferred = service["DEFERRED", "FULL"]
    print(
        "  as shipped (IMMEDIATE + FULL) vs NORMAL: "
        f"{full.ms - normal.ms:+.2f} ms per accrual ({full.ms / normal.ms:.2f}x); "
        f"vs deferred BEGIN: {full.ms - deferred.ms:+.2f} ms ({full.ms / deferred.ms:.2f}x)"
    )
    raw_full, raw_normal = raw["IMMEDIATE", "FULL"], raw["IMMEDIATE", "NORMAL"]
    print(
        f"  fsync at commit (bare transaction, FULL - NORMAL): "
        f"{raw_full.ms - raw_normal.ms:+.3f} ms on this machine's storage"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_cost", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch databases go")
    parser.add_argument("--transactions", type=int, default=1_000, help="per use-case figure")
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, args.transactions)
        return 0
    with tempfile.TemporaryDirectory(prefix="kiosk-write-cost-") as tmp:
        run(Path(tmp), args.transactions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
