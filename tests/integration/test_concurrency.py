"""Concurrency: 50 console processes accruing at once on one database all succeed and add up.

Each process runs the real ``kiosk points accrue`` command, forked from one that imported the
product once (:mod:`tests.forked_kiosk`), so all 50 are under way within moments. While they
start, the test holds the database's write lock for a few seconds, so the crowd queues behind
it and rushes in together when it is released: with the default deferred ``BEGIN`` some of
them would fail with "database is locked"; with ``BEGIN IMMEDIATE`` and the busy timeout they
wait their turn.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import KioskConfig
from tests.forked_kiosk import KioskForks

pytestmark = pytest.mark.slow

PROCESSES = 50
HOLD_LOCK_S = 3.0


def _env() -> dict[str, str]:
    """The environment without the developer's own KIOSK_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}


@pytest.fixture
def forks() -> Iterator[KioskForks]:
    with KioskForks(_env()) as server:
        yield server


def _run_json(forks: KioskForks, data_dir: Path, *args: str) -> dict:
    proc = forks.run("--data-dir", str(data_dir), *args, "--json", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict = json.loads(proc.stdout)
    return result


def test_fifty_console_accruals_at_once_all_succeed_and_add_up(
    tmp_path: Path, forks: KioskForks
) -> None:
    data_dir = tmp_path / "data"
    card = _run_json(forks, data_dir, "member", "register", "--phone", "13912345678", "--consent")[
        "card_no"
    ]

    # Amounts that keep the member below the first upgrade, so every purchase earns at the
    # base tier's rate: the expected points do not depend on the order of the commits.
    config = KioskConfig()
    base, first_upgrade = config.tiers.levels[0], config.tiers.levels[1]
    amounts = [1_000 + 37 * i for i in range(PROCESSES)]
    assert sum(amounts) < first_upgrade.threshold
    rate = config.points.points_per_yuan * base.multiplier_pct
    expected = {f"LANE-{i:03d}": amount * rate // 10_000 for i, amount in enumerate(amounts)}
    assert len(set(expected.values())) > 1

    blocker = sqlite3.connect(data_dir / "kiosk.db", isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    procs = []
    try:
        for (ref, _), amount in zip(expected.items(), amounts, strict=True):
            args = ["points", "accrue", "--card", card, "--amount-cents", str(amount)]
            procs.append(forks.start("--data-dir", str(data_dir), *args, "--ref", ref, "--json"))
        time.sleep(HOLD_LOCK_S)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    outputs = [proc.wait(timeout=300) for proc in procs]

    failures = [(code, err) for code, _, err in outputs if code != 0]
    assert not failures, f"{len(failures)} of {PROCESSES} failed, e.g. {failures[0]}"
    assert not [err for _, _, err in outputs if "locked" in err.lower()]

    results = [json.loads(out) for _, out, _ in outputs]
    assert {r["receipt_id"]: r["points"] for r in results} == expected
    assert not any(r["duplicate"] for r in results)
    assert all(r["tier"] == base.code and r["upgraded_to"] is None for r in results)
    # Commits were serialised: ordered by the balance each one reported, every accrual
    # started from the balance the previous one left.
    chain = sorted(results, key=lambda r: r["balance"])
    before = 0
    for r in chain:
        assert r["balance"] - r["points"] == before, chain
        before = r["balance"]

    total = sum(expected.values())
    shown = _run_json(forks, data_dir, "member", "show", "--card", card)
    assert shown["balance"] == total
    with sqlite3.connect(data_dir / "kiosk.db") as db:
        (member_id,) = db.execute(
            "SELECT member_id FROM card WHERE card_no = ?", (card,)
        ).fetchone()
        ledger = db.execute(
            "SELECT COALESCE(SUM(points), 0) FROM ledger_entry WHERE member_id = ?", (member_id,)
        ).fetchone()[0]
        purchases = db.execute("SELECT COUNT(*) FROM purchase WHERE member_id = ?", (member_id,))
        assert ledger == total
        assert purchases.fetchone()[0] == PROCESSES
    db.close()

    verify = forks.run("--data-dir", str(data_dir), "ledger", "verify", timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
