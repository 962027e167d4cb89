"""Crash safety: SIGKILL at random moments in accruals and redemptions loses and doubles nothing.

A worker (``crash_worker``) runs a deterministic stream of operations against one data
directory, journalling ``attempt`` before and ``done`` after each service call (fsynced). The
test kills it with SIGKILL after a random delay, restarts it (it retries its interrupted
operation with the same id), 200 times; then the real console's ``kiosk ledger verify`` must
pass, and the database must hold every journalled operation exactly once, nothing that was
never attempted, balances equal to a replay of the stream, and all the gift stock accounted for.

Most runs are forked from a server that imported everything once, so a run starts in
milliseconds; it is killed 5 to 120 ms after it has opened the database, so kills land in the
middle of transactions. Every tenth forked run lives longer (up to half a second), so the stream
also moves on when the machine is slow; every twentieth run is a cold start of a fresh
interpreter, killed while it imports, opens the database or works. On a loaded machine, where
runs get less done, the killing goes on past 200 (to 600, or for up to 8 minutes if that is
not enough) until the stream has moved at least 200 operations and at least 100 kills have landed
inside an operation, both before and after a commit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import KioskConfig
from edge.services.gifts import add_gift
from edge.services.members import register_member
from tests.integration.crash_worker import Operation, Plan, op_index, operation, read_journal

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KIOSK = Path(sys.executable).with_name("kiosk")
KILLS = 200
MAX_KILLS = 600
KILLING_S = 480  # past MAX_KILLS, kills go on this long while the stream lags
COLD_EVERY = 20  # every 20th run starts a fresh interpreter
LONG_EVERY = 10  # every 10th run lives up to half a second
SEED = 20_260_401
CARDS = 4
SKU = "CRASH-MUG"
PRICE = 40
INITIAL_STOCK = 100_000


def _set_up(tmp_path: Path) -> Plan:
    data_dir = tmp_path / "data"
    app = AppContext.open(data_dir, config=KioskConfig())
    try:
        cards = [
            register_member(app, f"1390000{i:04d}", consent=True, actor="test").card_no
            for i in range(CARDS)
        ]
        add_gift(app, SKU, "Crash test mug", PRICE, INITIAL_STOCK, actor="test")
    finally:
        app.close()
    plan = Plan(data_dir, tmp_path / "journal.log", cards, SKU, PRICE)
    plan.save(tmp_path / "plan.json")
    return plan


def _env() -> dict[str, str]:
    """The environment without the developer's own KIOSK_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}


def _worker_command(mode: str, plan_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.integration.crash_worker", mode, str(plan_path), *extra]


class ForkServer:
    """The worker's fork server, driven over its stdin and stdout."""

    def __init__(self, plan_path: Path, stderr_path: Path) -> None:
        self._stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.proc = subprocess.Popen(
            _worker_command("serve", plan_path),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env=_env(),
        )
        self.live_child: int | None = None

    def _ask(self, command: str, answer: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply and reply[0] == answer, (
            f"fork server answered {reply!r} to {command!r}: "
            f"{self._stderr_path.read_text()[-2000:]}"
        )
        return int(reply[1])

    def start_run(self, ops: int) -> int:
        """Forks a run; returns its pid once it has opened the database."""
        self.live_child = self._ask(f"run {ops}", "ready")
        return self.live_child

    def reap(self, pid: int) -> int:
        status = self._ask(f"reap {pid}", "status")
        self.live_child = None
        return status

    def close(self) -> None:
        if self.live_child is not None:  # a failed assertion left a child running
            os.kill(self.live_child, signal.SIGKILL)
            self.reap(self.live_child)
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


def _kill_cold_run(plan_path: Path, delay: float, stderr_path: Path) -> None:
    with stderr_path.open("a") as err:
        proc = subprocess.Popen(
            _worker_command("run", plan_path),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
        try:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"cold worker ended by itself ({proc.returncode}) before the kill: "
        f"{stderr_path.read_text()[-2000:]}"
    )


@dataclass
class JournalFacts:
    attempted: set[str] = field(default_factory=set)
    done: dict[str, dict[str, str]] = field(default_factory=dict)
    done_count: Counter[str] = field(default_factory=Counter)
    recovered: list[tuple[str, bool]] = field(default_factory=list)
    starts: int = 0


def _read_facts(journal: Path) -> JournalFacts:
    facts = JournalFacts()
    for line in read_journal(journal):
        word, *rest = line.split()
        if word == "start":
            facts.starts += 1
        elif word == "attempt":
            facts.attempted.add(rest[0])
        elif word == "recover":
            facts.recovered.append((rest[0], rest[1] == "committed"))
        elif word == "done":
            facts.done_count[rest[0]] += 1
            facts.done[rest[0]] = dict(item.split("=", 1) for item in rest[1:])
        else:
            raise AssertionError(f"unexpected journal line {line!r}")
    return facts


def _exercised(journal: Path) -> bool:
    """Whether the stream moved far enough and enough kills landed inside an operation.

    A kill lands inside an operation (between its ``attempt`` and ``done`` lines) only some of
    the time: the rest land while a journal line is fsynced. How often depends on how fast the
    service call is against the disk's fsync, so the killing goes on until half the kills have
    interrupted an operation, both before and after a commit, rather than trusting a ratio.
    """
    facts = _read_facts(journal)
    outcomes = {was_in for _, was_in in facts.recovered}
    return (
        len(facts.done) >= KILLS
        and len(facts.recovered) >= KILLS // 2
        and outcomes == {True, False}
    )


@dataclass
class Expected:
    """The stream replayed with the default rules: tiers by rolling spend, floor rounding."""

    balance: dict[str, int]
    tier: dict[str, str]
    accrual_points: dict[str, int]


def _replay(ops: list[Operation], cards: list[str]) -> Expected:
    config = KioskConfig()
    ladder = config.tiers.levels
    assert config.tiers.basis == "spend" and not config.points.member_days
    balance = dict.fromkeys(cards, 0)
    spend = dict.fromkeys(cards, 0)
    level = dict.fromkeys(cards, 0)
    accrual_points: dict[str, int] = {}
    for op in ops:
        if op.kind == "accrue":
            pct = ladder[level[op.card]].multiplier_pct
            points = op.amount_cents * config.points.points_per_yuan * pct // 10_000
            accrual_points[op.op_id] = points
            balance[op.card] += points
            spend[op.card] += op.amount_cents
            while level[op.card] + 1 < len(ladder) and (
                spend[op.card] >= ladder[level[op.card] + 1].threshold
            ):
                level[op.card] += 1
        else:
            balance[op.card] -= PRICE * op.qty
    tier = {card: ladder[i].code for card, i in level.items()}
    return Expected(balance, tier, accrual_points)


def _events_by(db: sqlite3.Connection, kind: str, key: str) -> Counter[str]:
    rows = db.execute("SELECT payload FROM outbox WHERE kind = ?", (kind,))
    return Counter(str(json.loads(p)["data"][key]) for (p,) in rows)


def _audits_by(db: sqlite3.Connection, action: str, key: str) -> Counter[str]:
    rows = db.execute("SELECT detail FROM audit WHERE action = ?", (action,))
    return Counter(str(json.loads(d)[key]) for (d,) in rows)


@pytest.mark.timeout(900)
def test_sigkill_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    plan = _set_up(tmp_path)
    plan_path = tmp_path / "plan.json"
    stderr_path = tmp_path / "worker.stderr"
    rng = random.Random(SEED)
    started = time.monotonic()

    server = ForkServer(plan_path, stderr_path)
    kills = 0
    # On a busy machine (the suite runs on every core) a run gets less done before its kill:
    # it takes more kills to get as far, so the kills go on until the stream has, up to a
    # generous deadline rather than a fixed number.
    deadline = started + KILLING_S
    try:
        while kills < KILLS or (
            (kills < MAX_KILLS or time.monotonic() < deadline) and not _exercised(plan.journal)
        ):
            k = kills
            kills += 1
            if k % COLD_EVERY == COLD_EVERY - 1:
                _kill_cold_run(plan_path, rng.uniform(0.3, 1.0), stderr_path)
                continue
            pid = server.start_run(1_000_000)
            long_run = k % LONG_EVERY == LONG_EVERY - 1
            time.sleep(rng.uniform(0.120, 0.500) if long_run else rng.uniform(0.005, 0.120))
            os.kill(pid, signal.SIGKILL)
            status = server.reap(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"run {k} ended by itself (wait status {status}) before the kill: "
                f"{stderr_path.read_text()[-2000:]}"
            )
    finally:
        server.close()
    killing = time.monotonic() - started

    # One last, undisturbed start: it finishes whatever the last kill interrupted.
    final = subprocess.run(
        _worker_command("run", plan_path, "--ops", "3"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert final.returncode == 0, final.stderr

    verify = subprocess.run(
        [str(KIOSK), "--data-dir", str(plan.data_dir), "ledger", "verify", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["problems"] == []

    facts = _read_facts(plan.journal)
    # The journal itself: a gapless prefix of the stream, each operation completed exactly once.
    assert facts.done_count and max(facts.done_count.values()) == 1
    assert facts.attempted == set(facts.done)
    indices = sorted(op_index(op_id) for op_id in facts.done)
    assert indices == list(range(len(indices)))
    ops = [operation(n, plan.cards) for n in indices]
    accruals = {op.op_id: op for op in ops if op.kind == "accrue"}
    redemptions = {op.op_id: op for op in ops if op.kind == "redeem"}
    assert len(ops) >= KILLS and len(redemptions) >= KILLS // 5

    # Kills landed mid-operation, both before and after the commit; the retry of an accrual
    # that had committed was answered as a duplicate, and only then.
    committed = [op_id for op_id, was_in in facts.recovered if was_in]
    rolled_back = [op_id for op_id, was_in in facts.recovered if not was_in]
    assert len(facts.recovered) >= KILLS // 2, "too few kills interrupted an operation"
    assert committed, "no kill landed between a commit and its journal line"
    assert rolled_back, "no kill landed inside a transaction"
    recovered_accruals = {op_id: was_in for op_id, was_in in facts.recovered if op_id in accruals}
    for op_id, was_in in recovered_accruals.items():
        assert facts.done[op_id]["duplicate"] == str(int(was_in)), op_id
    duplicates = {op_id for op_id in accruals if facts.done[op_id]["duplicate"] == "1"}
    assert duplicates <= set(recovered_accruals)

    expected = _replay(ops, plan.cards)
    db = sqlite3.connect(plan.data_dir / "kiosk.db")
    try:
        # Accruals: one purchase, one ledger entry, one event, one audit record per receipt.
        purchases = {
            rid: (card, amount, points)
            for rid, card, amount, points in db.execute(
                "SELECT receipt_id, card_no, amount_cents, points FROM purchase"
            )
        }
        assert set(purchases) == set(accruals)
        for rid, op in accruals.items():
            want = expected.accrual_points[rid]
            assert purchases[rid] == (op.card, op.amount_cents, want), rid
            assert int(facts.done[rid]["points"]) == want, rid
        entries = Counter(
            ref for (ref,) in db.execute("SELECT ref FROM ledger_entry WHERE kind = 'purchase'")
        )
        assert entries == Counter(rid for rid in accruals if expected.accrual_points[rid] > 0)
        assert _events_by(db, "points.accrued", "receipt_id") == Counter(accruals.keys())
        assert _audits_by(db, "points.accrue", "receipt_id") == Counter(accruals.keys())

        # Redemptions: one processed request, one redemption, its debits, one event each.
        processed = {
            rid: json.loads(result)["key"]
            for rid, result in db.execute(
                "SELECT request_id, result FROM processed_request WHERE intent = 'redeem'"
            )
        }
        assert set(processed) == set(redemptions)
        rows = {
            rid: (card, sku, qty, points)
            for rid, card, sku, qty, points in db.execute(
                "SELECT id, card_no, sku, qty, points FROM redemption"
            )
        }
        assert sorted(rows) == sorted(processed.values())
        for request_id, op in redemptions.items():
            redemption_id = processed[request_id]
            assert facts.done[request_id]["redemption"] == redemption_id
            assert rows[redemption_id] == (op.card, SKU, op.qty, PRICE * op.qty)
        debits: dict[str, int] = defaultdict(int)
        for ref, points in db.execute(
            "SELECT ref, points FROM ledger_entry WHERE kind = 'redemption'"
        ):
            debits[ref] += points
        assert debits == {rid: -points for rid, (_, _, _, points) in rows.items()}
        assert _events_by(db, "gift.redeemed", "redemption_id") == Counter(rows.keys())
        assert _audits_by(db, "gift.redeem", "redemption_id") == Counter(rows.keys())

        # Balances and tiers equal the replay; the stock adds up.
        held = {
            card: (balance, tier)
            for card, balance, tier in db.execute(
                "SELECT c.card_no, m.balance, m.tier FROM card c JOIN member m"
                " ON m.id = c.member_id"
            )
        }
        assert held == {c: (expected.balance[c], expected.tier[c]) for c in plan.cards}
        stock = db.execute("SELECT stock FROM gift WHERE sku = ?", (SKU,)).fetchone()[0]
        redeemed = sum(qty for _, _, qty, _ in rows.values())
        assert stock + redeemed == INITIAL_STOCK
        assert redeemed == sum(op.qty for op in redemptions.values())
    finally:
        db.close()

    print(
        f"\n{kills} kills in {killing:.1f} s; {len(ops)} operations; "
        f"{facts.starts} starts reached the database; {len(facts.recovered)} recoveries "
        f"({len(committed)} committed before the kill, {len(rolled_back)} rolled back); "
        f"tiers {sorted(expected.tier.values())}"
    )
