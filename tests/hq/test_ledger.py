"""HQ's central ledger on SQLite and on PostgreSQL: dedup, reconciliation, anti-cloning.

PostgreSQL is the tests' own throwaway cluster; each test gets its own schema, migrated as
`kiosk hq db upgrade` does and dropped afterwards.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch
from hq import personal
from hq.ledger import CentralLedger, balances, ledger_sums, stored_events
from hq.models import Alert, CentralMember, StoredEvent
from tests.hq.database import HQ_VAULT
from tests.hq.events import entry

ids = IdFactory()
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def event(kind, device, store, seq, data, at=T0) -> Event:
    return Event(
        event_id=ids.new(), kind=kind, store_id=store, device_id=device, at=at, data=data, seq=seq
    )


def test_dedup_reconcile_and_clone_alerts(engine):
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    member = ids.new()
    credit = entry(member, 3000, "K001", "S001")
    registered = event(
        "member.registered",
        "K001",
        "S001",
        1,
        {
            "member_id": member,
            "card_no": "1000000001",
            "tier": "normal",
            "consent_version": "2026-01",
            "entries": [],
        },
    )
    accrued = event(
        "points.accrued",
        "K001",
        "S001",
        2,
        {"member_id": member, "card_no": "1000000001", "entries": [credit]},
    )
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=[registered, accrued])
    with Session(engine) as s, s.begin():
        first = ledger.ingest(s, "K001", batch, T0)
    with Session(engine) as s, s.begin():
        again = ledger.ingest(s, "K001", batch, T0)  # a resend after a lost ack
    assert len(first.stored) == 2 and again.stored == [] and set(again.acked) == set(first.acked)

    # The same 3000 points redeemed offline at two stores, 3 minutes apart.
    def redeemed(device, store, seq, at):
        return event(
            "gift.redeemed",
            device,
            store,
            seq,
            {
                "member_id": member,
                "card_no": "1000000001",
                "entries": [
                    entry(member, -3000, device, store, credit["lot_id"], at, "redemption")
                ],
            },
            at,
        )

    with Session(engine) as s, s.begin():
        ledger.ingest(
            s,
            "K001",
            EventBatch(
                device_id="K001", batch_id=ids.new(), events=[redeemed("K001", "S001", 3, T0)]
            ),
            T0,
        )
        ledger.ingest(
            s,
            "K002",
            EventBatch(
                device_id="K002",
                batch_id=ids.new(),
                events=[redeemed("K002", "S002", 1, T0 + timedelta(minutes=3))],
            ),
            T0,
        )
    with Session(engine) as s:
        m = s.get(CentralMember, member)
        assert m is not None and m.balance == -3000 and m.overdraft_flagged
        assert balances(s) == ledger_sums(s) == {member: -3000}
        kinds = {(a.kind, a.subject) for a in s.scalars(select(Alert))}
        assert ("overdraft", member) in kinds
        assert ("card_clone_suspect", "1000000001") in kinds
        assert s.scalar(select(StoredEvent.hq_seq).order_by(StoredEvent.hq_seq.desc())) == 4


def test_events_from_a_device_speaking_for_another_are_quarantined(engine):
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    forged = event("points.accrued", "K002", "S002", 1, {"member_id": ids.new(), "entries": []})
    with Session(engine) as s, s.begin():
        result = ledger.ingest(
            s, "K001", EventBatch(device_id="K001", batch_id=ids.new(), events=[forged]), T0
        )
    assert (
        result.stored == [] and result.quarantined and result.quarantined[0][0] == forged.event_id
    )


def test_a_voucher_collected_twice_is_flagged_once_and_everything_is_kept(engine):
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    voucher = ids.new()

    def collected(device, store, seq, verified, at):
        data = {
            "voucher_id": voucher,
            "issuer_device_id": "K001",
            "redemption_id": voucher if verified else None,
            "sku": "TOWEL" if verified else "",
            "qty": 1 if verified else 0,
            "staff_id": "c1",
            "verified": verified,
            "offline": not verified,
        }
        return event("gift.collected", device, store, seq, data, at)

    def ingest(device, *events):
        batch = EventBatch(device_id=device, batch_id=ids.new(), events=list(events))
        with Session(engine) as s, s.begin():
            return ledger.ingest(s, device, batch, T0)

    # Printed at S001's K001 and collected there; taken offline at S002 as well.
    at_home = collected("K001", "S001", 1, True, T0 + timedelta(hours=1))
    first = ingest("K001", at_home)
    assert first.alerts == [] and len(first.stored) == 1
    assert ingest("K001", at_home).stored == []  # a resend: still one collection
    other = ingest("K002", collected("K002", "S002", 1, False, T0 + timedelta(hours=2)))
    assert other.alerts == ["voucher_collected_twice"] and len(other.stored) == 1
    third = ingest("K003", collected("K003", "S003", 1, False, T0 + timedelta(hours=3)))
    assert third.alerts == [] and len(third.stored) == 1  # the alert is open already
    with Session(engine) as s:
        alerts = s.scalars(select(Alert).where(Alert.kind == "voucher_collected_twice")).all()
        assert [(a.subject, a.store_id, a.device_id) for a in alerts] == [
            (f"K001:{voucher}", "S002", "K002")
        ]
        assert "first at S001 (K001) 2026-03-02 03:00 UTC" in alerts[0].detail
        kinds = s.scalars(select(StoredEvent.kind).order_by(StoredEvent.hq_seq)).all()
        assert kinds == ["gift.collected"] * 3


def test_names_and_birthdays_are_sealed_at_hq_and_erased_with_the_member(engine):
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    member = ids.new()
    registered = event(
        "member.registered",
        "K001",
        "S001",
        1,
        {
            "member_id": member,
            "card_no": "1000000001",
            "tier": "normal",
            "consent_version": "2026-01",
            "name": "欧阳秀英",
            "birthday": "1950-03-09",
            "entries": [],
        },
    )
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=[registered])
    with Session(engine) as s, s.begin():
        ledger.ingest(s, "K001", batch, T0)
    with engine.connect() as conn:  # as whoever reads the tables themselves sees them
        raw = conn.execute(text("SELECT * FROM hq_member")).all()
        raw += conn.execute(text("SELECT * FROM hq_event")).all()
    stored = repr(raw).encode() + b"".join(
        bytes(v) for row in raw for v in row if isinstance(v, bytes | memoryview)
    )
    for clear in ("欧阳秀英".encode(), b"1950-03-09", b"1950"):
        assert clear not in stored
    with Session(engine) as s:
        kept = s.get(CentralMember, member)
        assert kept is not None and kept.birth_month == 3
        assert personal.name_of(HQ_VAULT, kept) == "欧阳秀英"
        assert personal.birthday_of(HQ_VAULT, kept) == date(1950, 3, 9)
        [(_, relayed)] = stored_events(s, HQ_VAULT, 0, 10)  # as a store hears of it
        assert (relayed.data["name"], relayed.data["birthday"]) == ("欧阳秀英", "1950-03-09")

    deleted = event(
        "member.deleted", "K001", "S001", 2, {"member_id": member, "cards_blocked": ["1000000001"]}
    )
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=[deleted])
    with Session(engine) as s, s.begin():
        ledger.ingest(s, "K001", batch, T0)
    with Session(engine) as s:
        gone = s.get(CentralMember, member)
        assert gone is not None and gone.deleted
        assert (gone.name_enc, gone.birthday_enc, gone.birth_month) == (None, None, None)
        assert (gone.phone_hash, gone.phone_enc, gone.phone_masked) == (None, None, "")
        relayed = stored_events(s, HQ_VAULT, 0, 10)[0][1]
        assert "name" not in relayed.data and "birthday" not in relayed.data
