"""A gift's per-member limit counts across the chain: a kiosk counts the member's redemptions
at other devices too, as its replica hears of them (another device's ``gift.redeemed``, or
the member's snapshot from HQ), each once by its redemption id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.config import parse_config
from edge.domain.errors import Refusal
from edge.domain.ids import IdFactory
from edge.protocol import EventBatch, MemberSnapshot, ReplicaBatch, ReplicaEvent
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member, show_member
from edge.services.points import accrue_purchase
from edge.services.replica import apply_fetched_member, apply_replica_batch, replica_cursor
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from edge.storage.models import ChainRedemption, OutboxEvent
from edge.sync.agent import Agent
from hq.feeds import snapshot
from hq.ledger import CentralLedger, next_seq, stored_events
from hq.service import HqService
from tests.hq.database import HQ_VAULT, sqlite_hq_engine
from tests.sync.conftest import Runner, kiosk_config, make_data_dir, open_app, wait_until
from tests.sync.helpers import caught_up, drained, hq_config, outbox_events

ids = IdFactory()
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LEDGER = CentralLedger(timedelta(minutes=10), HQ_VAULT)


def kiosk(root: Path, device: str, store: str, start: int) -> AppContext:
    text = kiosk_config(device, store, 1, start).replace("enabled = true", "enabled = false")
    return AppContext.open(root / device, config=parse_config(text))


class Chain:
    """HQ's ledger and two kiosks of two stores, synced by hand as the agents would."""

    def __init__(self, root: Path) -> None:
        self.hq = sqlite_hq_engine(root / "hq.db")
        self.a = kiosk(root, "K001", "S001", 1)
        self.b = kiosk(root, "K002", "S002", 50_000)
        self.root = root
        for app in (self.a, self.b):
            add_gift(app, "MUG", "Mug", points=10, stock=100, per_member_limit=1)
            add_gift(app, "PEN", "Pen", points=5, stock=100, per_member_limit=2)
            add_gift(
                app, "C5", "5 yuan off", 20, 100, per_member_limit=1, kind="coupon",
                coupon_value_cents=500,
            )  # fmt: skip

    def send(self, app: AppContext) -> None:
        """``app``'s outbox to HQ."""
        with Session(self.hq) as s:
            start = next_seq(s, app.device_id)
        pending = [e for e in outbox_events(app) if e.seq >= start]
        if pending:
            batch = EventBatch(device_id=app.device_id, batch_id=ids.new(), events=pending)
            with Session(self.hq) as s, s.begin():
                LEDGER.ingest(s, app.device_id, batch, NOW)
            with app.db.write() as s:
                s.execute(update(OutboxEvent).values(delivered_at=NOW))

    def follow(self, app: AppContext) -> None:
        """HQ's events since ``app``'s cursor, to its replica."""
        with transaction(app) as tx:
            cursor = replica_cursor(tx, "chain")
        with Session(self.hq) as s:
            stored = stored_events(s, HQ_VAULT, cursor, 100_000)
        if not stored:
            return
        events = [
            ReplicaEvent(hq_seq=n, event=e) for n, e in stored if e.device_id != app.device_id
        ]
        outcome = apply_replica_batch(
            app, ReplicaBatch(after_seq=cursor, to_seq=stored[-1][0], events=events, at=NOW)
        )
        assert not outcome.gap and outcome.set_aside == 0 and outcome.waiting == 0

    def snapshot(self, member_id: str) -> MemberSnapshot:
        with Session(self.hq) as s:
            snap = snapshot(s, HQ_VAULT, member_id)
        assert snap is not None
        return snap

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.hq.dispose()


@pytest.fixture
def chain(tmp_path) -> Iterator[Chain]:
    c = Chain(tmp_path)
    yield c
    c.close()


def member_of_a(chain: Chain, phone: str = "13800138000") -> str:
    card = register_member(chain.a, phone, consent=True).card_no
    accrue_purchase(chain.a, card, 100_000, f"R-{phone}")
    return card


def refused(app: AppContext, card: str, sku: str, qty: int = 1) -> str:
    with pytest.raises(Refusal) as err:
        redeem_gift(app, card, sku, qty)
    return err.value.code


def chain_rows(app: AppContext) -> list[tuple[str, str, int]]:
    with app.db.read() as s:
        rows = s.execute(select(ChainRedemption.id, ChainRedemption.sku, ChainRedemption.qty))
        return sorted(rows.tuples().all())


def test_a_limit_reached_at_another_store_is_reached_here_once_its_event_arrives(chain):
    card = member_of_a(chain)
    chain.send(chain.a)
    chain.follow(chain.b)  # store B holds the member (as if it had met them before)
    mug = redeem_gift(chain.a, card, "MUG")
    coupon = redeem_gift(chain.a, card, "C5")
    pen = redeem_gift(chain.a, card, "PEN")
    chain.send(chain.a)
    chain.follow(chain.b)
    assert refused(chain.b, card, "MUG") == "limit_reached"
    assert refused(chain.b, card, "C5") == "limit_reached"  # coupons count the same way
    assert refused(chain.b, card, "PEN", 2) == "limit_reached"
    assert redeem_gift(chain.b, card, "PEN").qty == 1  # one left of two
    assert chain_rows(chain.b) == sorted((r.redemption_id, r.sku, 1) for r in (mug, coupon, pen))
    # and store A hears of store B's pen: the member has both now
    chain.send(chain.b)
    chain.follow(chain.a)
    assert refused(chain.a, card, "PEN") == "limit_reached"
    for app in (chain.a, chain.b):
        assert verify_ledger(app).ok


def test_a_redemption_heard_of_twice_counts_once(chain):
    card = member_of_a(chain)
    chain.send(chain.a)
    chain.follow(chain.b)
    redeem_gift(chain.a, card, "PEN")
    chain.send(chain.a)
    chain.follow(chain.b)
    chain.follow(chain.b)  # nothing new
    before = chain_rows(chain.b)
    # the same events again under new numbers (HQ resent them), and in the member's snapshot
    with transaction(chain.b) as tx:
        cursor = replica_cursor(tx, "chain")
    with Session(chain.hq) as s:
        stored = [e for _, e in stored_events(s, HQ_VAULT, 0, 100_000) if e.device_id != "K002"]
    outcome = apply_replica_batch(
        chain.b,
        ReplicaBatch(
            after_seq=cursor,
            to_seq=cursor + len(stored),
            events=[ReplicaEvent(hq_seq=cursor + n + 1, event=e) for n, e in enumerate(stored)],
            at=NOW,
        ),
    )
    assert outcome.set_aside == 0
    apply_fetched_member(chain.b, chain.snapshot(show_member(chain.a, card_no=card).member_id))
    assert chain_rows(chain.b) == before and len(before) == 1
    assert redeem_gift(chain.b, card, "PEN").qty == 1  # the second of two, not refused
    assert refused(chain.b, card, "PEN") == "limit_reached"


def test_a_store_fetching_the_member_counts_the_redemptions_in_the_snapshot(chain):
    card = member_of_a(chain)
    redeem_gift(chain.a, card, "MUG")
    redeem_gift(chain.a, card, "C5")
    chain.send(chain.a)
    member_id = show_member(chain.a, card_no=card).member_id
    snap = chain.snapshot(member_id)
    assert sorted((r.sku, r.qty) for r in snap.redemptions) == [("C5", 1), ("MUG", 1)]
    apply_fetched_member(chain.b, snap)
    assert refused(chain.b, card, "MUG") == "limit_reached"
    assert refused(chain.b, card, "C5") == "limit_reached"
    assert redeem_gift(chain.b, card, "PEN", 2).qty == 2
    # store A fetching its own redemption back in a snapshot does not count it twice
    chain.send(chain.b)
    apply_fetched_member(chain.a, chain.snapshot(member_id))
    with chain.a.db.read() as s:
        assert s.scalar(select(func.count()).select_from(ChainRedemption)) == 1  # B's pens
    assert refused(chain.a, card, "PEN") == "limit_reached"


def test_a_snapshot_from_an_hq_without_redemptions_still_reads(chain):
    card = member_of_a(chain)
    chain.send(chain.a)
    snap = chain.snapshot(show_member(chain.a, card_no=card).member_id)
    older = snap.model_dump_json(exclude={"redemptions"})
    assert '"redemptions"' not in older
    read = MemberSnapshot.model_validate_json(older)
    assert read.redemptions == []
    apply_fetched_member(chain.b, read)
    assert redeem_gift(chain.b, card, "MUG").qty == 1


def test_a_member_with_a_limit_of_one_is_refused_at_store_b_through_the_broker(broker, tmp_path):
    """Store B refuses a gift the member already took at store A, whether B fetches the
    member from HQ after it, or held them already and hears of it through its feed."""
    hq = HqService(hq_config(broker, tmp_path))
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    for app in (a, b):
        add_gift(app, "MUG", "Mug", points=10, stock=10, per_member_limit=1)
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    try:
        held = register_member(a, "13800138001", consent=True).card_no
        fetched = register_member(a, "13800138002", consent=True).card_no
        for n, card in enumerate((held, fetched)):
            accrue_purchase(a, card, 10_000, f"R-{n}")
        wait_until(drained(a), 20, "store A's members at HQ")
        show_member(b, card_no=held)  # store B fetches and holds this one from now on
        for card in (held, fetched):
            redeem_gift(a, card, "MUG")
        wait_until(drained(a), 20, "the redemptions at HQ")
        wait_until(caught_up(b, hq.engine), 20, "store B's feed")
        for card in (held, fetched):  # ``fetched`` is fetched from HQ by the attempt
            with pytest.raises(Refusal) as err:
                redeem_gift(b, card, "MUG")
            assert err.value.code == "limit_reached"
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()
