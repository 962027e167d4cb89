"""Replication scoped to the store, on SQLite and on PostgreSQL.

Two real kiosks (stores S001 and S002) make real event streams; HQ stores them. A third
kiosk at S002, new, follows S002's feed from the start: it must end with exactly the members
S002 holds (its own, and those whose points moved there), at HQ's balances, its ledger
verified, and nothing of S001's other members. A member of S001 met at S002 is fetched; from
then on their changes reach S002 and nowhere else they are not held.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.config import parse_config
from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, MemberSnapshot, ReplicaBatch
from edge.security.personal import TextVault
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.remote import Fetched, Holding, fetch_if_unknown, holding
from edge.services.replica import apply_fetched_member, apply_replica_batch, replica_cursor
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from hq.feeds import feed_chunk, feed_head, fetch, holders, release_unseen
from hq.ledger import CentralLedger, balances, next_seq
from hq.models import FeedItem
from hq.service import HqConfig, HqService
from tests.hq.database import HQ_VAULT, hq_data_key_file
from tests.sync.conftest import kiosk_config
from tests.sync.helpers import local_balances, outbox_events

ids = IdFactory()
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LEDGER = CentralLedger(timedelta(minutes=10), HQ_VAULT)


def kiosk(root: Path, device: str, store: str, start: int) -> AppContext:
    text = kiosk_config(device, store, 1, start).replace("enabled = true", "enabled = false")
    return AppContext.open(root / device, config=parse_config(text))


def send(engine: Engine, app: AppContext, now: datetime = NOW) -> None:
    """What the agent does: the outbox from the seq HQ expects, in one batch (HQ storing
    it at ``now``)."""
    with Session(engine) as s:
        expected = next_seq(s, app.device_id)
    pending = [e for e in outbox_events(app) if e.seq >= expected]
    if pending:
        batch = EventBatch(device_id=app.device_id, batch_id=ids.new(), events=pending)
        with Session(engine) as s, s.begin():
            LEDGER.ingest(s, app.device_id, batch, now)


def follow(engine: Engine, app: AppContext, vault: TextVault = HQ_VAULT) -> int:
    """Applies ``app``'s store feed after its cursor, chunk by chunk; returns items seen
    (``vault``: HQ's data key, which opens the names and birthdays the snapshots carry)."""
    seen = 0
    while True:
        with transaction(app) as tx:
            cursor = replica_cursor(tx, "store")
        with Session(engine) as s:
            last, items = feed_chunk(s, vault, app.store_id, cursor)
        if last == cursor:
            return seen
        items = [i for i in items if i.event is None or i.event.device_id != app.device_id]
        batch = ReplicaBatch(after_seq=cursor, to_seq=last, events=items, at=NOW, feed="store")
        outcome = apply_replica_batch(app, batch)
        assert not outcome.gap and outcome.set_aside == 0, outcome
        seen += len(items)


def test_a_new_kiosk_gets_its_stores_members_and_hears_only_about_them(engine, tmp_path):
    a = kiosk(tmp_path, "K001", "S001", 1)
    b = kiosk(tmp_path, "K002", "S002", 50_000)
    own_a = [register_member(a, f"1381000000{n}", consent=True) for n in range(4)]
    for n, reg in enumerate(own_a):
        accrue_purchase(a, reg.card_no, 5_000 + 100 * n, f"A-{n}")
    own_b = register_member(b, "13810000009", consent=True)
    accrue_purchase(b, own_b.card_no, 3_000, "B-own")
    send(engine, a)
    send(engine, b)

    # S002 meets one of S001's members: fetched from HQ, held by S002 from now on.
    visitor = own_a[0]
    with Session(engine) as s, s.begin():
        found, items = fetch(s, HQ_VAULT, "S002", NOW, card_no=visitor.card_no)
    assert found is not None and items
    apply_fetched_member(b, found)
    accrue_purchase(b, visitor.card_no, 2_000, "B-visitor")
    accrue_purchase(a, visitor.card_no, 1_000, "A-visitor-again")
    accrue_purchase(a, own_a[1].card_no, 1_000, "A-1-again")
    send(engine, b)
    send(engine, a)

    with Session(engine) as s:
        hq = balances(s)
        held = holders(s, hq)
    assert held[visitor.member_id] == {"S001", "S002"}
    assert held[own_a[1].member_id] == {"S001"}
    assert held[own_b.member_id] == {"S002"}

    # K002 follows its store's feed: the visitor's accrual at S001 reaches it.
    follow(engine, b)
    assert local_balances(b)[visitor.member_id] == hq[visitor.member_id]

    # A new kiosk at S002: S002's members only, at HQ's balances, its ledger sound.
    c = kiosk(tmp_path, "K003", "S002", 100_000)
    follow(engine, c)
    here = local_balances(c)
    assert set(here) == {visitor.member_id, own_b.member_id}
    assert here == {m: hq[m] for m in here}
    report = verify_ledger(c)
    assert report.ok, report.problems
    # Following again brings nothing new; a second snapshot of the same member changes nothing.
    assert follow(engine, c) == 0
    with Session(engine) as s:
        again, more = fetch(s, HQ_VAULT, "S002", NOW, card_no=visitor.card_no)
    assert again is not None and not more  # already held: no new feed item
    apply_fetched_member(c, again)
    assert local_balances(c) == here
    # S001's feed never carried S002's own member.
    with Session(engine) as s:
        _, s001 = feed_chunk(s, HQ_VAULT, "S001", 0)
    named = {i.event.data.get("member_id") for i in s001 if i.event is not None}
    assert own_b.member_id not in named
    for app in (a, b, c):
        app.close()


def test_a_member_hq_does_not_know_is_not_found(engine):
    with Session(engine) as s, s.begin():
        assert fetch(s, HQ_VAULT, "S002", NOW, card_no="1000000009") == (None, [])
        assert fetch(s, HQ_VAULT, "S002", NOW, phone_hash="0" * 64) == (None, [])


def test_a_fetch_racing_an_accrual_misses_nothing(engine, tmp_path):
    """A member's accrual stored while another store fetches them is in the snapshot or in
    that store's feed, whichever the locks let first (on PostgreSQL the two really race)."""
    a = kiosk(tmp_path, "K001", "S001", 1)
    reg = register_member(a, "13810000001", consent=True)
    send(engine, a)
    rounds = 6
    for n in range(rounds):
        accrue_purchase(a, reg.card_no, 1_000 + n, f"R-{n}")
    events = [e for e in outbox_events(a) if e.kind == "points.accrued"]
    store = [f"S1{n:02d}" for n in range(rounds)]
    got: dict[str, MemberSnapshot | None] = {}

    def fetcher(n: int) -> None:
        with Session(engine) as s, s.begin():
            got[store[n]] = fetch(s, HQ_VAULT, store[n], NOW, card_no=reg.card_no)[0]

    def ingest(event: Event) -> None:
        batch = EventBatch(device_id="K001", batch_id=ids.new(), events=[event])
        with Session(engine) as s, s.begin():
            LEDGER.ingest(s, "K001", batch, NOW)

    for n, event in enumerate(events):
        threads = [
            threading.Thread(target=ingest, args=(event,)),
            threading.Thread(target=fetcher, args=(n,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with Session(engine) as s:
        final = balances(s)[reg.member_id]
        for n in range(rounds):
            snap = got[store[n]]
            _, items = feed_chunk(s, HQ_VAULT, store[n], 0)
            ids_in_feed = {
                e["id"]
                for i in items
                if i.event is not None
                for e in i.event.data.get("entries", [])
            }
            assert snap is not None, f"store {store[n]} did not find the member"
            snapshot_ids = {e.id for e in snap.entries} | {
                e.id for i in items if i.member is not None for e in i.member.entries
            }
            credited = {e["id"]: e["points"] for ev in events for e in ev.data["entries"]}
            held = sum(p for i, p in credited.items() if i in ids_in_feed | snapshot_ids)
            assert held == sum(credited.values()), f"store {store[n]} misses an accrual"
        assert final == sum(e["points"] for ev in events for e in ev.data["entries"])
    a.close()


def test_feed_numbers_stay_gap_free_per_store(engine, tmp_path):
    a = kiosk(tmp_path, "K001", "S001", 1)
    for n in range(5):
        reg = register_member(a, f"1381000010{n}", consent=True)
        accrue_purchase(a, reg.card_no, 2_000, f"G-{n}")
        send(engine, a)
    with Session(engine) as s:
        numbers = list(
            s.scalars(
                select(FeedItem.feed_seq)
                .where(FeedItem.store_id == "S001")
                .order_by(FeedItem.feed_seq)
            )
        )
        assert numbers == list(range(1, len(numbers) + 1))
        assert feed_head(s, "S001") == len(numbers) == 10
    a.close()


def test_a_store_stops_holding_a_member_it_no_longer_sees(engine, tmp_path):
    a = kiosk(tmp_path, "K001", "S001", 1)
    b = kiosk(tmp_path, "K002", "S002", 50_000)
    visitor = register_member(a, "13810000001", consent=True)
    regular = register_member(a, "13810000002", consent=True)
    send(engine, a)
    for reg in (visitor, regular):  # both shop once at S002
        with Session(engine) as s, s.begin():
            found, _ = fetch(s, HQ_VAULT, "S002", NOW, card_no=reg.card_no)
        assert found is not None
        apply_fetched_member(b, found)
        accrue_purchase(b, reg.card_no, 1_000, f"B-{reg.card_no}")
    send(engine, b)
    # The regular comes back eleven months later, and again the next day (one renewal).
    accrue_purchase(b, regular.card_no, 500, "B-again")
    send(engine, b, NOW + timedelta(days=335))
    accrue_purchase(b, regular.card_no, 500, "B-next-day")
    send(engine, b, NOW + timedelta(days=336))

    # Twelve months and a half on, nothing ends yet (the 30 days' grace); thirteen months on,
    # S002 stops holding the visitor; the regular and S001's holding of its own members stay.
    # Running it again ends nothing more.
    hq_worker = HqService(
        HqConfig(database_url="sqlite://", hold_months=12, data_key_file=hq_data_key_file()), engine
    )
    assert hq_worker.release_holdings(NOW + timedelta(days=380)) == 0
    assert hq_worker.release_holdings(NOW + timedelta(days=13 * 31 + 30)) == 1
    with Session(engine) as s, s.begin():
        assert release_unseen(s, NOW + timedelta(days=13 * 31 + 30), months=12, limit=1) == 0
    with Session(engine) as s, s.begin():
        held = holders(s, [visitor.member_id, regular.member_id])
        head = feed_head(s, "S002")
    assert held == {visitor.member_id: {"S001"}, regular.member_id: {"S001", "S002"}}
    # The visitor's points moving at S001 no longer reach S002; the regular's still do.
    accrue_purchase(a, visitor.card_no, 2_000, "A-visitor")
    send(engine, a, NOW + timedelta(days=13 * 31 + 31))
    with Session(engine) as s:
        assert feed_head(s, "S002") == head
    accrue_purchase(a, regular.card_no, 2_000, "A-regular")
    send(engine, a, NOW + timedelta(days=13 * 31 + 31))
    with Session(engine) as s:
        assert feed_head(s, "S002") == head + 1
    # Met again at S002, the visitor is fetched and held again, at HQ's balance.
    with Session(engine) as s, s.begin():
        found, items = fetch(
            s, HQ_VAULT, "S002", NOW + timedelta(days=13 * 31 + 32), card_no=visitor.card_no
        )
        assert found is not None and items  # a new holding: a snapshot in S002's feed
        assert holders(s, [visitor.member_id])[visitor.member_id] == {"S001", "S002"}
        hq = balances(s)
    apply_fetched_member(b, found)
    assert local_balances(b)[visitor.member_id] == hq[visitor.member_id]
    for app in (a, b):
        app.close()


def test_a_kiosk_fetches_again_a_member_of_another_store_it_has_not_seen_for_months(
    engine, tmp_path
):
    a = kiosk(tmp_path, "K001", "S001", 1)
    b = kiosk(tmp_path, "K002", "S002", 50_000)
    visitor = register_member(a, "13810000001", consent=True)
    fetched_only = register_member(a, "13810000002", consent=True)
    own = register_member(b, "13810000003", consent=True)
    send(engine, a)
    for reg in (visitor, fetched_only):
        with Session(engine) as s, s.begin():
            found, _ = fetch(s, HQ_VAULT, "S002", NOW, card_no=reg.card_no)
        assert found is not None
        apply_fetched_member(b, found)
    accrue_purchase(b, visitor.card_no, 1_000, "B-visitor")
    today = b.clock()

    def at(days: int) -> Holding:
        b.clock = lambda: today + timedelta(days=days)
        return holding(b, visitor.card_no, None)

    assert at(0) is Holding.HELD
    assert at(360) is Holding.HELD  # the purchase here, within the 12 months
    assert at(380) is Holding.STALE
    b.clock = lambda: today + timedelta(days=380)
    assert holding(b, fetched_only.card_no, None) is Holding.STALE
    assert holding(b, own.card_no, None) is Holding.HELD  # its own, for good
    assert holding(b, None, b.vault.lookup_hash("13810000003")) is Holding.HELD
    assert holding(b, "2900999999997", None) is Holding.ABSENT
    # HQ cannot be asked (this kiosk does not sync): a stale member is served as held, an
    # absent one is not found.
    assert fetch_if_unknown(b, card_no=visitor.card_no) is None
    assert fetch_if_unknown(b, card_no="2900999999997") is Fetched.OFFLINE
    # A fetch renews the holding.
    with Session(engine) as s, s.begin():
        found, _ = fetch(s, HQ_VAULT, "S002", NOW, card_no=visitor.card_no)
    assert found is not None
    apply_fetched_member(b, found)
    assert holding(b, visitor.card_no, None) is Holding.HELD
    for app in (a, b):
        app.close()
