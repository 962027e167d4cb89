"""Several HQ workers on one PostgreSQL database store each event once, number the chain's
events without a gap, and keep balances, alerts and each device's order right when they
race for the same device, member and card.

Each worker here is an :class:`HqService` with its own engine (as a separate process has),
storing batches through the same method the MQTT handler uses.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.sync.agent import Agent
from hq.ledger import balances, ledger_sums
from hq.models import Alert, StoredEvent
from hq.service import HqConfig, HqService
from tests.hq.database import HQ_VAULT, hq_data_key_file, migrated_engine
from tests.hq.events import entry
from tests.sync.conftest import Runner, make_data_dir, open_app
from tests.sync.helpers import HqProcess, drained, hq_config, local_balances, outbox_events
from tests.waiting import wait_for

ids = IdFactory()
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DEVICES = [("K001", "S001"), ("K002", "S002"), ("K003", "S003"), ("K004", "S004")]


@dataclass
class Chain:
    """Every device's outbox, cut into batches, and what HQ must end up with."""

    batches: list[tuple[str, EventBatch]] = field(default_factory=list)
    sums: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))


def _chain(rng: random.Random, per_device: int) -> Chain:
    chain = Chain()
    members = {d: [(ids.new(), f"29{i:02d}{n:09d}") for n in range(5)] for i, (d, _) in
               enumerate(DEVICES)}  # fmt: skip
    everyone = [m for ms in members.values() for m in ms]
    for device, store in DEVICES:
        events = chain.events[device]

        def add(
            kind: str,
            data: dict,
            at: datetime,
            device: str = device,
            store: str = store,
            events: list[Event] = events,
        ) -> None:
            events.append(
                Event(
                    event_id=ids.new(),
                    kind=kind,
                    store_id=store,
                    device_id=device,
                    at=at,
                    data=data,
                    seq=len(events) + 1,
                )
            )

        for member, card in members[device]:
            add(
                "member.registered",
                {
                    "member_id": member,
                    "card_no": card,
                    "tier": "normal",
                    "consent_version": "2026-01",
                    "entries": [],
                },
                T0,
            )
        for n in range(per_device):
            member, card = rng.choice(everyone)  # members shop at every store
            at = T0 + timedelta(seconds=n)
            points = rng.choice([100, 250, 40]) if rng.random() < 0.8 else -60
            e = entry(member, points, device, store, at=at)
            chain.sums[member] += points
            kind = "points.accrued" if points > 0 else "gift.redeemed"
            add(kind, {"member_id": member, "card_no": card, "entries": [e]}, at)
        start = 0
        while start < len(events):
            size = rng.randint(1, 6)
            chain.batches.append(
                (device, EventBatch(device_id=device, batch_id=ids.new(),
                                    events=events[start : start + size]))
            )  # fmt: skip
            start += size
    return chain


def _workers(url: str, count: int) -> list[HqService]:
    return [
        HqService(
            HqConfig(database_url=url, client_id=f"hq-{n}", data_key_file=hq_data_key_file()),
            migrated_engine(url),
        )
        for n in range(count)
    ]


def test_four_workers_storing_every_batch_twice_in_any_order_store_each_event_once(
    postgres_url,
):
    rng = random.Random(20261206)
    chain = _chain(rng, per_device=150)
    workers = _workers(postgres_url, 4)
    # Every batch is delivered twice (a resend after a lost ack), to any worker, in any
    # order; a batch that arrives before the ones it follows is told to wait (expect_seq)
    # and comes again later, as a device resends.
    deliveries = [b for b in chain.batches for _ in range(2)]
    rng.shuffle(deliveries)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(hq: HqService) -> None:
        while True:
            with lock:
                if not deliveries or errors:
                    return
                device, batch = deliveries.pop(0)
            try:
                result = hq.store_batch(device, batch, datetime.now(UTC))
            except BaseException as exc:  # reported below, with the others stopped
                errors.append(exc)
                return
            if result.gap:
                with lock:
                    deliveries.insert(rng.randint(0, len(deliveries)), (device, batch))

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    engine = workers[0].engine
    with Session(engine) as s:
        stored = s.execute(
            select(StoredEvent.hq_seq, StoredEvent.event_id, StoredEvent.device_id,
                   StoredEvent.device_seq).order_by(StoredEvent.hq_seq)
        ).all()  # fmt: skip
        total = sum(len(v) for v in chain.events.values())
        assert [row.hq_seq for row in stored] == list(range(1, total + 1))  # no gap
        assert len({row.event_id for row in stored}) == total  # each once
        for device, events in chain.events.items():
            in_order = [row.device_seq for row in stored if row.device_id == device]
            assert in_order == [e.seq for e in events]
        assert balances(s) == ledger_sums(s)
        assert {m: b for m, b in balances(s).items() if m in chain.sums} == dict(chain.sums)
        open_alerts = Counter(
            (a.kind, a.subject) for a in s.scalars(select(Alert).where(Alert.cleared_at.is_(None)))
        )
        assert all(n == 1 for n in open_alerts.values()), open_alerts
    for w in workers:
        w.engine.dispose()


def test_a_worker_racing_another_for_the_same_batch_waits_and_acknowledges_it(postgres_url):
    """Two workers get the same batch at the same moment: the second waits for the first's
    transaction, then finds the events stored and acknowledges them without storing them
    again."""
    chain = _chain(random.Random(7), per_device=3)
    device, batch = chain.batches[0]
    first, second = _workers(postgres_url, 2)
    with Session(first.engine) as held:
        held.begin()
        from hq.ledger import CentralLedger

        taken = CentralLedger(timedelta(minutes=10), HQ_VAULT).ingest(held, device, batch, T0)
        assert len(taken.stored) == len(batch.events)
        outcome: list = []
        racer = threading.Thread(
            target=lambda: outcome.append(second.store_batch(device, batch, T0))
        )
        racer.start()
        with Session(first.engine) as probe:
            wait_for(
                lambda: (
                    probe.scalar(
                        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                    )
                    >= 1
                ),
                timeout=30,
                what="the second worker waiting for the first one's lock",
            )
        held.commit()
    racer.join(60)
    (result,) = outcome
    assert result.stored == [] and set(result.acked) == {e.event_id for e in batch.events}
    assert second.counters.races >= 1
    with Session(first.engine) as s:
        assert s.scalar(select(StoredEvent.hq_seq).order_by(StoredEvent.hq_seq.desc())) == len(
            batch.events
        )
    first.engine.dispose()
    second.engine.dispose()


def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(broker, tmp_path, postgres_url):
    """Two `kiosk hq serve` workers share a kiosk's events through the broker's shared
    subscription; one is SIGKILLed while events flow: the kiosk resends what was not
    acknowledged, the other worker takes it, and HQ holds every event once, in order."""
    migrated_engine(postgres_url).dispose()
    worker_a = HqService(hq_config(broker, tmp_path, database_url=postgres_url, client_id="hq-a"))
    worker_b = HqProcess(broker, postgres_url, tmp_path / "hq-b.log", client_id="hq-b")
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    runners = [Runner(worker_a.run), Runner(Agent(app).run)]
    worker_b.start()
    engine = worker_a.engine
    member = register_member(app, "13800138000", consent=True)
    made = 0

    def more(n: int) -> None:
        nonlocal made
        for _ in range(n):
            made += 1
            accrue_purchase(app, member.card_no, 1_000 + made, f"R-{made}")

    def stored() -> int:
        with Session(engine) as s:
            return int(s.scalar(select(func.count()).select_from(StoredEvent)) or 0)

    try:
        # Events flow until worker B has stored a share of them, then B is killed mid-flow.
        def b_has_a_share() -> bool:
            more(5)
            return stored() - worker_a.counters.stored > 0

        wait_for(b_has_a_share, timeout=60, what="worker B storing some of the events")
        more(20)
        worker_b.kill()
        more(100)
        wait_for(drained(app), timeout=120, what="the kiosk's outbox drained by worker A")
    finally:
        for r in runners:
            r.stop()
        if worker_b.alive():
            worker_b.kill()
    with Session(engine) as s:
        rows = s.execute(
            select(StoredEvent.hq_seq, StoredEvent.device_seq).order_by(StoredEvent.hq_seq)
        ).all()
        total = len(outbox_events(app))  # the registration, the accruals, tier changes
        assert total > made
        assert [r.hq_seq for r in rows] == list(range(1, total + 1))
        assert [r.device_seq for r in rows] == list(range(1, total + 1))
        assert balances(s) == ledger_sums(s) == local_balances(app)
    assert verify_ledger(app).ok
    app.close()
    engine.dispose()


def test_workers_raising_the_same_alert_at_once_open_one_and_fail_nothing(postgres_url):
    """Two workers handle low-disk telemetry of the same devices at the same moment: each
    device gets one open disk_low alert and neither worker counts a failure."""
    from tests.hq.test_fleet import _sample

    workers = _workers(postgres_url, 2)
    devices = [f"K{n:03d}" for n in range(40)]
    start = threading.Barrier(2)

    def run(hq: HqService) -> None:
        start.wait(10)
        for device in devices:
            hq.handle(_sample(device, 100 * 1000**2, 32 * 1000**3))

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [w.counters.failed for w in workers] == [0, 0]
    with Session(workers[0].engine) as s:
        subjects = s.scalars(
            select(Alert.subject).where(Alert.kind == "disk_low", Alert.cleared_at.is_(None))
        ).all()
    assert sorted(subjects) == devices
    for w in workers:
        w.engine.dispose()
