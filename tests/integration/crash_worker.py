"""The worker the crash-safety test kills: a deterministic stream of accruals and redemptions.

Operation ``n`` of the stream is fixed by ``n`` alone (see :func:`operation`): an accrual with
receipt id ``R-<n>`` or a redemption with request id ``Q-<n>``, on one of the plan's cards.
Around every service call the worker appends to a journal, each line flushed and fsynced:

    start <pid>                   the worker opened the database
    recover <id> committed|absent  after a crash: was the interrupted operation in the database?
    attempt <id>                  about to call the service
    done <id> <detail>            the service call returned (detail: what it answered)

On start it reads the journal, repairs a torn last line, and resumes: an operation attempted
but not done is retried with the same id (the services make that idempotent), then the stream
continues. Two ways to run it:

    python -m tests.integration.crash_worker run PLAN [--ops N]   one run, N operations at most
    python -m tests.integration.crash_worker serve PLAN           fork server, commands on stdin

``serve`` imports everything once and forks a fresh child per run, so a run starts in a few
milliseconds: ``run N`` forks a child doing ``N`` operations and answers ``ready <pid>`` once
the child has opened the database and journalled its start (``died <pid>`` if it never got
there); ``reap <pid>`` waits for that child and answers ``status <raw wait status>``; ``quit``
ends. The child's pid stays reserved (a zombie) until reaped, so killing it by pid is safe.
Each child opens the data directory itself (``AppContext.open``: new engine, new connections);
only imports and process-wide caches come from the server. In ``run`` mode the worker prints
``ready <pid>`` on standard output at the same point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.app import AppContext
from edge.config import KioskConfig
from edge.services.gifts import redeem_gift
from edge.services.points import accrue_purchase
from edge.storage.models import ProcessedRequest, Purchase

ACTOR = "crash-worker"


@dataclass(frozen=True)
class Plan:
    """What the test set up: where the data lives, the members' cards and the gift."""

    data_dir: Path
    journal: Path
    cards: list[str]
    sku: str
    price: int

    @classmethod
    def load(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            Path(raw["data_dir"]),
            Path(raw["journal"]),
            list(raw["cards"]),
            raw["sku"],
            int(raw["price"]),
        )

    def save(self, path: Path) -> None:
        raw = {
            "data_dir": str(self.data_dir),
            "journal": str(self.journal),
            "cards": self.cards,
            "sku": self.sku,
            "price": self.price,
        }
        path.write_text(json.dumps(raw, indent=2), encoding="utf-8")


@dataclass(frozen=True)
class Operation:
    index: int
    op_id: str
    kind: str  # "accrue" or "redeem"
    card: str
    amount_cents: int = 0
    qty: int = 0


def operation(n: int, cards: list[str]) -> Operation:
    """Operation ``n`` of the stream.

    Every fifth operation is a redemption of one or two gifts; the rest are purchases of 50 to
    550 yuan. With four cards taking turns, every 20 operations give each card four purchases
    (at least 200 points) and one redemption, and each card's first redemption comes after a
    purchase worth more than it: with a gift of at most 50 points a balance never runs dry.
    """
    card = cards[n % len(cards)]
    if n % 5 == 4:
        return Operation(n, f"Q-{n}", "redeem", card, qty=1 + (n // 5) % 2)
    return Operation(n, f"R-{n}", "accrue", card, amount_cents=5_000 + (n * 7_919) % 50_001)


@dataclass
class JournalState:
    next_index: int = 0
    pending: int | None = None  # index attempted but not done


class Journal:
    """The append-only journal; every line is on disk before the worker moves on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._repair()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _repair(self) -> None:
        """Cuts a line torn by a kill mid-write; it was never followed by a service call."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode("ascii"))
        os.fsync(self._fd)

    def state(self) -> JournalState:
        result = JournalState()
        for line in read_journal(self.path):
            word, _, rest = line.partition(" ")
            if word == "attempt":
                index = op_index(rest)
                result.pending = index
                result.next_index = max(result.next_index, index + 1)
            elif word == "done" and op_index(rest.split()[0]) == result.pending:
                result.pending = None
        return result

    def close(self) -> None:
        os.close(self._fd)


def read_journal(path: Path) -> list[str]:
    """The journal's complete lines (a torn last line is not part of it)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="ascii")
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline is empty or torn


def op_index(op_id: str) -> int:
    return int(op_id.split("-", 1)[1])


def in_database(app: AppContext, op: Operation) -> bool:
    with app.db.read() as session:
        model = Purchase if op.kind == "accrue" else ProcessedRequest
        return session.get(model, op.op_id) is not None


def perform(app: AppContext, plan: Plan, op: Operation) -> str:
    """Calls the service; returns what it answered, for the journal."""
    if op.kind == "accrue":
        accrual = accrue_purchase(app, op.card, op.amount_cents, op.op_id, actor=ACTOR)
        return f"points={accrual.points} duplicate={int(accrual.duplicate)}"
    redemption = redeem_gift(app, op.card, plan.sku, op.qty, request_id=op.op_id, actor=ACTOR)
    return f"points={redemption.points} redemption={redemption.redemption_id}"


def run(plan: Plan, max_ops: int, ready: Callable[[], None] | None = None) -> None:
    """One life of the worker: resume from the journal, then up to ``max_ops`` operations.

    ``ready`` is called once the database is open and the start is journalled.
    """
    journal = Journal(plan.journal)
    app = AppContext.open(plan.data_dir, config=KioskConfig())
    try:
        state = journal.state()
        journal.append(f"start {os.getpid()}")
        if ready is not None:
            ready()
        if state.pending is not None:
            op = operation(state.pending, plan.cards)
            found = in_database(app, op)
            journal.append(f"recover {op.op_id} {'committed' if found else 'absent'}")
            journal.append(f"attempt {op.op_id}")
            journal.append(f"done {op.op_id} {perform(app, plan, op)}")
        for n in range(state.next_index, state.next_index + max_ops):
            op = operation(n, plan.cards)
            journal.append(f"attempt {op.op_id}")
            journal.append(f"done {op.op_id} {perform(app, plan, op)}")
    finally:
        app.close()
        journal.close()


def _child(plan: Plan, max_ops: int, ready_fd: int) -> None:
    """A forked run: signals readiness on ``ready_fd``; never returns."""
    code = 0

    def ready() -> None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)

    try:
        run(plan, max_ops, ready)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    finally:
        os._exit(code)


def serve(plan: Plan) -> None:
    """Fork server: each ``run`` command forks a child that does one run and exits."""
    # Warm the process-wide caches (schema revision scripts, key files) once; the engine and
    # its connections are gone again before the first fork.
    AppContext.open(plan.data_dir, config=KioskConfig()).close()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "run":
            sys.stdout.flush()
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(plan, int(words[1]), write_fd)
            os.close(write_fd)
            signalled = os.read(read_fd, 1)  # empty: the child died before it was ready
            os.close(read_fd)
            print(f"{'ready' if signalled else 'died'} {pid}", flush=True)
        elif words[0] == "reap":
            _, status = os.waitpid(int(words[1]), 0)
            print(f"status {status}", flush=True)
        elif words[0] == "quit":
            return
        else:
            print(f"error unknown command {words[0]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crash_worker", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "serve"])
    parser.add_argument("plan", type=Path)
    parser.add_argument("--ops", type=int, default=1_000_000, help="operations in this run")
    args = parser.parse_args(argv)
    plan = Plan.load(args.plan)
    if args.mode == "serve":
        serve(plan)
    else:
        run(plan, args.ops, lambda: print(f"ready {os.getpid()}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
