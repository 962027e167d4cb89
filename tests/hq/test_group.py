"""Several devices' batches waiting together are stored in one transaction: the outcome is
the one storing each on its own gives (each event once, each device's order, the chain's and
the stores' numbering without a gap), and a batch that cannot be stored with the others
falls back to being stored alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, Topics
from edge.protocol.link import Inbound
from hq.ledger import balances
from hq.models import FeedItem, QuarantinedEvent, StoredEvent
from hq.service import HqConfig, HqService
from tests.hq.database import sqlite_hq_engine
from tests.hq.events import entry

ids = IdFactory()
T = Topics()
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def stream(device: str, store: str, members: int) -> list[Event]:
    """Registrations then purchases of ``device``'s own members, seq 1..n."""
    events: list[Event] = []
    people = [ids.new() for _ in range(members)]
    for n, member in enumerate(people):
        events.append(
            Event(
                event_id=ids.new(),
                kind="member.registered",
                store_id=store,
                device_id=device,
                at=T0,
                data={
                    "member_id": member,
                    "card_no": f"29{device[-3:]}{n:08d}",
                    "tier": "normal",
                    "consent_version": "2026-01",
                    "entries": [],
                },
                seq=len(events) + 1,
            )
        )
    for n, member in enumerate(people * 2):
        events.append(
            Event(
                event_id=ids.new(),
                kind="points.accrued",
                store_id=store,
                device_id=device,
                at=T0 + timedelta(seconds=n),
                data={"member_id": member, "entries": [entry(member, 10 + n, device, store)]},
                seq=len(events) + 1,
            )
        )
    return events


def messages() -> list[Inbound]:
    """Three devices' batches as they might arrive: interleaved, one resent, one early."""
    out: list[Inbound] = []
    streams = {d: stream(d, f"S{d[-3:]}", 3) for d in ("K001", "K002", "K003")}
    chunks = {d: [s[i : i + 3] for i in range(0, len(s), 3)] for d, s in streams.items()}
    for round_ in range(3):
        for device, parts in chunks.items():
            batch = EventBatch(device_id=device, batch_id=ids.new(), events=parts[round_])
            out.append(Inbound(T.events(device), batch.to_bytes(), 1, len(out) + 1, False))
    out.insert(2, out[0])  # K001's first batch again
    early = EventBatch(device_id="K002", batch_id=ids.new(), events=chunks["K002"][2])
    out.insert(4, Inbound(T.events("K002"), early.to_bytes(), 1, 99, False))  # before its turn
    return out


def outcome(engine) -> tuple:
    with Session(engine) as s:
        per_device = {
            d: list(
                s.scalars(
                    select(StoredEvent.device_seq)
                    .where(StoredEvent.device_id == d)
                    .order_by(StoredEvent.hq_seq)
                )
            )
            for d in ("K001", "K002", "K003")
        }
        numbers = list(s.scalars(select(StoredEvent.hq_seq).order_by(StoredEvent.hq_seq)))
        feeds = {
            store: list(
                s.scalars(
                    select(FeedItem.feed_seq)
                    .where(FeedItem.store_id == store)
                    .order_by(FeedItem.feed_seq)
                )
            )
            for store in ("S001", "S002", "S003")
        }
        quarantined = s.scalar(select(func.count()).select_from(QuarantinedEvent))
        return per_device, numbers, feeds, quarantined, sorted(balances(s).values())


def service(tmp_path, name: str) -> HqService:
    engine = sqlite_hq_engine(tmp_path / f"{name}.db")
    return HqService(HqConfig(database_url="sqlite://", client_id=name), engine)


def test_a_group_stores_what_one_by_one_stores(tmp_path):
    arriving = messages()
    alone, grouped = service(tmp_path, "alone"), service(tmp_path, "grouped")
    for msg in arriving:
        alone.handle(msg)
    grouped.handle_events([grouped.arrive(m) for m in arriving])
    expected = outcome(alone.engine)
    per_device, numbers, feeds, quarantined, _ = expected
    assert per_device == {"K001": list(range(1, 10)), "K002": list(range(1, 10)),
                          "K003": list(range(1, 10))}  # fmt: skip
    assert numbers == list(range(1, 28)) and quarantined == 0
    assert all(f == list(range(1, len(f) + 1)) and f for f in feeds.values())
    assert outcome(grouped.engine) == expected
    assert grouped.counters.handled == len(arriving) and grouped.counters.failed == 0


def test_a_batch_that_cannot_go_with_the_others_is_stored_alone(tmp_path):
    arriving = messages()
    bad = Event(
        event_id=ids.new(),
        kind="points.accrued",
        store_id="S009",  # not K001's store: quarantined, the others stored
        device_id="K001",
        at=T0,
        data={"member_id": ids.new(), "entries": []},
        seq=10,
    )
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=[bad])
    arriving.append(Inbound(T.events("K001"), batch.to_bytes(), 1, 100, False))
    arriving.append(Inbound(T.events("K001"), b"{not json", 1, 101, False))
    hq = service(tmp_path, "mixed")
    hq.handle_events([hq.arrive(m) for m in arriving])
    per_device, numbers, _, quarantined, _ = outcome(hq.engine)
    assert per_device["K001"] == list(range(1, 10)) and quarantined == 1
    assert numbers == list(range(1, 28))
    assert hq.counters.dropped == 1 and hq.counters.handled == len(arriving)
