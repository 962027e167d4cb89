"""HQ keeps each gift voucher a kiosk printed and answers another store's check of it,
claiming it for that store once: on SQLite and PostgreSQL, two stores at the same moment
included."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, VoucherCheck
from hq.ledger import CentralLedger
from hq.models import Alert, GiftVoucher, VoucherCollection
from hq.vouchers import check_voucher
from tests.hq.database import HQ_VAULT

ids = IdFactory()
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
MEMBER = ids.new()


def event(kind, device, store, seq, data, at=T0) -> Event:
    return Event(
        event_id=ids.new(), kind=kind, store_id=store, device_id=device, at=at, data=data, seq=seq
    )


def ingest(engine, device, *events):
    batch = EventBatch(device_id=device, batch_id=ids.new(), events=list(events))
    with Session(engine) as s, s.begin():
        return CentralLedger(timedelta(minutes=10), HQ_VAULT).ingest(s, device, batch, T0)


def redeemed(voucher: str, seq: int, **extra) -> Event:
    data = {
        "member_id": MEMBER,
        "card_no": "1000000018",
        "redemption_id": voucher,
        "sku": "TOWEL",
        "qty": 2,
        "points": 600,
        "offline": False,
        "coupons": 0,
        "entries": [],
    }
    return event("gift.redeemed", "K001", "S001", seq, data | extra)


def registered() -> Event:
    data = {
        "member_id": MEMBER,
        "card_no": "1000000018",
        "tier": "normal",
        "consent_version": "2026-01",
        "entries": [],
    }
    return event("member.registered", "K001", "S001", 1, data)


def ask(engine, device, store, voucher, claim=True, today=date(2026, 3, 2)):
    request = VoucherCheck(
        device_id=device,
        store_id=store,
        issuer_device_id="K001",
        voucher_id=voucher,
        claim=claim,
        today=today,
    )
    with Session(engine) as s, s.begin():
        return check_voucher(s, request, store, T0 + timedelta(hours=1))


def collected(device, store, seq, voucher, verified):
    data = {
        "voucher_id": voucher,
        "issuer_device_id": "K001",
        "redemption_id": voucher if verified else None,
        "sku": "TOWEL" if verified else "",
        "qty": 2 if verified else 0,
        "staff_id": "c1",
        "verified": verified,
        "offline": not verified,
    }
    return event("gift.collected", device, store, seq, data, T0 + timedelta(hours=2))


def test_a_voucher_is_claimed_for_one_store_and_that_stores_event_is_no_second_collection(
    engine,
):
    voucher, coupon, old = ids.new(), ids.new(), ids.new()
    ingest(
        engine,
        "K001",
        registered(),
        redeemed(voucher, 2, name="毛巾", valid_until="2026-04-01"),
        redeemed(coupon, 3, coupons=2, sku="C10"),  # a coupon redemption prints no voucher
        redeemed(old, 4),  # from before the name and the date came with the event
    )
    with Session(engine) as s:
        kept = {v.voucher_id: v for v in s.scalars(select(GiftVoucher))}
    assert set(kept) == {voucher, old}
    assert (kept[voucher].name, kept[voucher].qty, kept[voucher].valid_until) == (
        "毛巾",
        2,
        date(2026, 4, 1),
    )
    assert (kept[old].name, kept[old].valid_until, kept[old].store_id) == ("", None, "S001")

    assert ask(engine, "K002", "S002", ids.new()).state == "unknown"
    known = ask(engine, "K002", "S002", voucher, claim=False)
    assert (known.state, known.sku, known.name, known.qty) == ("known", "TOWEL", "毛巾", 2)
    assert known.card_masked == "******0018" and known.valid_until == date(2026, 4, 1)
    lapsed = ask(engine, "K002", "S002", voucher, today=date(2026, 4, 2))
    assert lapsed.state == "known"  # past its date: not claimed
    claimed = ask(engine, "K002", "S002", voucher)
    assert (claimed.state, claimed.name) == ("claimed", "毛巾")
    for device, store in (("K002", "S002"), ("K003", "S003"), ("K001", "S001")):
        again = ask(engine, device, store, voucher)
        assert again.state == "collected" and again.name == "毛巾"
        assert (again.collected_store_id, again.collected_device_id) == ("S002", "K002")
        assert again.collected_at == T0 + timedelta(hours=1)

    # K002's event of the collection HQ granted it is that collection, not a second one
    assert ingest(engine, "K002", collected("K002", "S002", 1, voucher, True)).alerts == []
    # one taken offline elsewhere is a second collection
    other = ingest(engine, "K003", collected("K003", "S003", 1, voucher, False))
    assert other.alerts == ["voucher_collected_twice"]
    with Session(engine) as s:
        first = s.get(VoucherCollection, ("K001", voucher))
        assert first is not None and (first.device_id, first.event_id) != ("K002", "")
        assert first.device_id == "K002"
        alert = s.scalars(select(Alert).where(Alert.kind == "voucher_collected_twice")).one()
        assert alert.device_id == "K003" and "first at S002 (K002)" in alert.detail


def test_two_stores_claiming_one_voucher_at_the_same_moment_get_it_once(engine):
    voucher = ids.new()
    ingest(engine, "K001", registered(), redeemed(voucher, 2, valid_until="2026-04-01"))
    stores = [(f"K10{n}", f"S10{n}") for n in range(4)]
    answers: dict[str, str] = {}
    start = threading.Barrier(len(stores))

    def claim(device: str, store: str) -> None:
        start.wait()
        answers[device] = ask(engine, device, store, voucher).state

    threads = [threading.Thread(target=claim, args=pair) for pair in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers.values()) == ["claimed", "collected", "collected", "collected"]
    [winner] = [d for d, state in answers.items() if state == "claimed"]
    with Session(engine) as s:
        assert s.get(VoucherCollection, ("K001", voucher)).device_id == winner
