"""Every node converges to HQ's balances, whatever order and repeats the network delivers.

Two kiosks build real event streams (registrations, purchases, redemptions, a refund and
adjustments, each store serving the other's members through the replica). Hypothesis then
delivers them:

- to HQ's ingest in arbitrary slices, out of order and repeated, the device going back to
  the seq HQ asks for, as the agent does; HQ must store each event once, in each device's
  order, and end at the balances of an in-order delivery;
- to a third kiosk's replica in arbitrary interleavings with repeats (entries before their
  member's registration among them); it must never fail, and end at the same balances with
  nothing left waiting and its ledger verified.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.config import parse_config
from edge.domain.errors import Refusal
from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, ReplicaBatch, ReplicaEvent
from edge.services.corrections import adjust_points, refund_purchase
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.replica import apply_replica_batch, replica_cursor
from edge.services.staff import StaffIdentity
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from edge.storage.models import ChainRedemption, OutboxEvent
from edge.storage.sync_models import SetAside
from hq.ledger import CentralLedger, balances, next_seq, stored_events
from hq.models import QuarantinedEvent, StoredEvent
from tests.hq.database import HQ_VAULT, migrated_engine, sqlite_hq_engine
from tests.sync.conftest import kiosk_config
from tests.sync.helpers import local_balances, outbox_events

ids = IdFactory()
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LEDGER = CentralLedger(timedelta(minutes=10), HQ_VAULT)
CLERK = StaffIdentity("c1", "clerk")


def kiosk(root: Path, device: str, store: str, start: int) -> AppContext:
    text = kiosk_config(device, store, 1, start).replace("enabled = true", "enabled = false")
    return AppContext.open(root / device, config=parse_config(text))


def sync(engine, apps: list[AppContext]) -> None:
    """What the agents and HQ do when nothing goes wrong: outboxes in, replicas out."""
    for app in apps:
        pending = [e for e in outbox_events(app) if e.seq >= next_seq_of(engine, app)]
        if pending:
            with Session(engine) as s, s.begin():
                LEDGER.ingest(s, app.device_id, batch(app.device_id, pending), NOW)
            with app.db.write() as s:
                s.execute(update(OutboxEvent).values(delivered_at=NOW))
    for app in apps:
        with transaction(app) as tx:
            cursor = replica_cursor(tx, "chain")
        with Session(engine) as s:
            stored = stored_events(s, HQ_VAULT, cursor, 100_000)
        if stored:
            outcome = apply_replica_batch(
                app,
                ReplicaBatch(
                    after_seq=cursor,
                    to_seq=stored[-1][0],
                    events=[
                        ReplicaEvent(hq_seq=n, event=e)
                        for n, e in stored
                        if e.device_id != app.device_id
                    ],
                    at=NOW,
                ),
            )
            assert not outcome.gap and outcome.set_aside == 0


def next_seq_of(engine, app: AppContext) -> int:
    with Session(engine) as s:
        return next_seq(s, app.device_id)


def batch(device: str, events: list[Event]) -> EventBatch:
    return EventBatch(device_id=device, batch_id=ids.new(), events=events)


class Streams:
    def __init__(self, root: Path) -> None:
        self.root = root
        engine = sqlite_hq_engine(root / "hq.db")
        a = kiosk(root, "K001", "S001", 1)
        b = kiosk(root, "K002", "S002", 50_000)
        for app in (a, b):
            add_gift(app, "PEN", "Pen", points=7, stock=1000)
        own = [register_member(a, f"1381000000{n}", consent=True) for n in range(3)]
        for n, reg in enumerate(own):
            accrue_purchase(a, reg.card_no, 5_000 + 100 * n, f"A-{n}")
        sync(engine, [a, b])
        for n, reg in enumerate(own[:2]):
            accrue_purchase(b, reg.card_no, 2_000, f"B-{n}")
        theirs = register_member(b, "13810000009", consent=True)
        accrue_purchase(b, theirs.card_no, 3_000, "B-own")
        sync(engine, [a, b])
        accrue_purchase(a, theirs.card_no, 1_500, "A-theirs")
        for app, reg, n in ((a, own[0], 1), (b, own[1], 2), (b, theirs, 3), (a, own[0], 4)):
            with contextlib.suppress(Refusal):
                redeem_gift(app, reg.card_no, "PEN", request_id=f"RQ-{n}")
        # the desk's corrections: a refund at the store that sold, adjustments both ways
        refund_purchase(b, "B-0", "RF-B0", 1_000)
        adjust_points(a, theirs.card_no, 25, "goodwill", "", CLERK)
        adjust_points(b, own[1].card_no, -3, "correction", "", CLERK)
        accrue_purchase(b, own[2].card_no, 700, "B-2")
        sync(engine, [a, b])
        self.streams = {app.device_id: outbox_events(app) for app in (a, b)}
        with Session(engine) as s:
            self.expected = balances(s)
            self.hq_order = [e for _, e in stored_events(s, HQ_VAULT, 0, 100_000)]
        assert len(self.expected) == 4 and all(self.expected.values())
        self.redeemed: dict[tuple[str, str], int] = {}
        for e in self.hq_order:
            if e.kind == "gift.redeemed":
                key = (e.data["member_id"], e.data["sku"])
                self.redeemed[key] = self.redeemed.get(key, 0) + e.data["qty"]
        self.template = root / "template"
        kiosk(root, "K003", "S003", 100_000).close()
        shutil.copytree(root / "K003", self.template)
        for app in (a, b):
            app.close()
        engine.dispose()


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> Iterator[Streams]:
    yield Streams(tmp_path_factory.mktemp("streams"))


FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FAST
@given(data=st.data())
def test_hq_stores_each_device_in_order_whatever_the_network_does(streams, data):
    engine = migrated_engine("sqlite+pysqlite:///:memory:")
    devices = sorted(streams.streams)
    shuffle = data.draw(st.randoms(use_true_random=False))
    steps = data.draw(
        st.lists(
            st.tuples(st.sampled_from(devices), st.integers(0, 40), st.integers(1, 12)),
            max_size=15,
        )
    )
    for device, start, length in steps:
        stream = streams.streams[device]
        chunk = stream[start % len(stream) :][:length]
        shuffle.shuffle(chunk)
        with Session(engine) as s, s.begin():
            LEDGER.ingest(s, device, batch(device, chunk), NOW)
    # The devices go back to what HQ asks for until all is acknowledged.
    for device in devices:
        stream = streams.streams[device]
        while True:
            with Session(engine) as s:
                expected = next_seq(s, device)
            rest = [e for e in stream if e.seq >= expected]
            if not rest:
                break
            with Session(engine) as s, s.begin():
                result = LEDGER.ingest(s, device, batch(device, rest[:5]), NOW)
            assert result.stored, "HQ took nothing from the seq it asked for"
    with Session(engine) as s:
        for device in devices:
            order = list(
                s.scalars(
                    select(StoredEvent.device_seq)
                    .where(StoredEvent.device_id == device)
                    .order_by(StoredEvent.hq_seq)
                )
            )
            assert order == [e.seq for e in streams.streams[device]]
        assert s.scalar(select(func.count()).select_from(QuarantinedEvent)) == 0
        assert balances(s) == streams.expected
    engine.dispose()


@FAST
@given(data=st.data())
def test_a_replica_converges_whatever_order_and_repeats_it_is_fed(streams, data):
    events = streams.hq_order
    order = data.draw(st.permutations(list(range(len(events)))))
    repeats = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    feed = list(order)
    place = data.draw(st.randoms(use_true_random=False))
    for index in repeats:
        feed.insert(place.randint(0, len(feed)), index)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(feed) - 1), max_size=8))))
    stale = data.draw(st.booleans())
    work = Path(tempfile.mkdtemp(dir=streams.root))
    shutil.copytree(streams.template, work / "K003")
    app = kiosk(work, "K003", "S003", 100_000)
    try:
        bounds = [0, *cuts, len(feed)]
        batches = []
        for lo, hi in itertools.pairwise(bounds):
            batches.append(
                ReplicaBatch(
                    after_seq=lo,
                    to_seq=hi,
                    events=[
                        ReplicaEvent(hq_seq=n + 1, event=events[feed[n]]) for n in range(lo, hi)
                    ],
                    at=NOW,
                )
            )
        for number, replica in enumerate(batches):
            outcome = apply_replica_batch(app, replica)
            assert not outcome.gap and outcome.set_aside == 0
            if stale and number:
                assert apply_replica_batch(app, batches[number - 1]).stale
        held = local_balances(app)
        assert {m: held.get(m) for m in streams.expected} == streams.expected
        assert chain_redeemed(app) == streams.redeemed  # what gift limits count, each once
        with app.db.read() as s:
            assert s.scalar(select(func.count()).select_from(SetAside)) == 0
        report = verify_ledger(app)
        assert report.ok, report.problems
    finally:
        app.close()
        shutil.rmtree(work, ignore_errors=True)


def chain_redeemed(app: AppContext) -> dict[tuple[str, str], int]:
    with app.db.read() as s:
        rows = s.execute(
            select(
                ChainRedemption.member_id, ChainRedemption.sku, func.sum(ChainRedemption.qty)
            ).group_by(ChainRedemption.member_id, ChainRedemption.sku)
        )
        return {(m, sku): int(qty) for m, sku, qty in rows}


def test_the_streams_hold_what_the_properties_need(streams):
    """Cross-store entries, so an entry can arrive before its member's registration."""
    kinds = {e.kind for stream in streams.streams.values() for e in stream}
    assert {"member.registered", "points.accrued", "gift.redeemed"} <= kinds
    assert {"points.refunded", "points.adjusted"} <= kinds
    assert sum(streams.redeemed.values()) >= 2  # redemptions the replica counts for limits
    registered_at = {
        e.data["member_id"]: e.device_id
        for stream in streams.streams.values()
        for e in stream
        if e.kind == "member.registered"
    }
    crossing = [
        e
        for stream in streams.streams.values()
        for e in stream
        if e.kind == "points.accrued" and registered_at[e.data["member_id"]] != e.device_id
    ]
    assert len(crossing) >= 3
