"""Use cases against a real SQLite file: members, cards, points, tiers, expiry."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from edge.domain.errors import InvalidInput, NotFound, PermissionDenied, Refusal
from edge.services import cards, ledger, members, personal, points, staff
from edge.services.tiers import review_tiers
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from edge.storage.models import Member, OutboxEvent


def register(app, phone="13800138000", **kw):
    return members.register_member(app, phone, True, **kw)


def events(app, kind=None):
    with app.db.read() as s:
        stmt = select(OutboxEvent.kind).order_by(OutboxEvent.seq)
        return [k for k in s.scalars(stmt) if kind is None or k == kind]


def test_registration_issues_a_card_and_records_consent(app):
    reg = register(app, name="王女士", birthday="1950-03-09")
    assert reg.card_no == "2900000000018"
    view = members.show_member(app, card_no=reg.card_no)
    assert (view.phone_masked, view.name_masked, view.tier) == ("138****8000", "王女士", "normal")
    with app.db.read() as s:
        m = s.get(Member, reg.member_id)
        assert m.consent_version == app.config.privacy.consent_version
        assert b"13800138000" not in m.phone_cipher  # encrypted at rest
        assert app.vault.decrypt(m.phone_cipher) == "13800138000"
    assert events(app) == ["member.registered"]


def test_name_and_birthday_are_encrypted_at_rest(app):
    reg = register(app, name="欧阳秀英", birthday="1950-03-09")
    with app.db.read() as s:
        m = s.get(Member, reg.member_id)
        assert personal.name_of(app, m) == "欧阳秀英"
        assert personal.birthday_of(app, m) == date(1950, 3, 9)
        assert "欧阳秀英".encode() not in m.name_cipher
    with app.db.read() as s:  # the registration goes to HQ with them, as it is sent
        payload = s.scalar(select(OutboxEvent.payload))
    sent = json.loads(personal.as_sent(app, payload))["data"]
    assert (sent["name"], sent["birthday"]) == ("欧阳秀英", "1950-03-09")
    app.db.engine.dispose()
    raw = sqlite3.connect(app.data_dir / "kiosk.db")  # as whoever copies the file reads it
    try:
        rows = raw.execute("SELECT * FROM member").fetchall()
    finally:
        raw.close()
    stored = repr(rows).encode() + b"".join(v for row in rows for v in row if isinstance(v, bytes))
    assert rows and "欧阳秀英".encode() not in stored and "欧阳秀英" not in repr(rows)
    for clear in (b"1950-03-09", b"19500309", b"1950"):
        assert clear not in stored
    # nor anywhere in the files, the outbox and the write-ahead log included
    on_disk = b"".join(p.read_bytes() for p in app.data_dir.glob("kiosk.db*"))
    for clear in ("欧阳秀英".encode(), b"1950-03-09"):
        assert clear not in on_disk


def test_registration_refusals(app):
    with pytest.raises(Refusal) as err:
        members.register_member(app, "13800138000", consent=False)
    assert err.value.code == "consent_required"
    with pytest.raises(InvalidInput):
        register(app, phone="12345")
    register(app)
    with pytest.raises(Refusal) as err:
        register(app, phone="+86 138-0013-8000")
    assert err.value.code == "phone_registered"
    with pytest.raises(Refusal) as err:
        register(app, phone="13900139000", referrer_phone="13700137000")
    assert err.value.code == "unknown_referrer"
    assert events(app) == ["member.registered"]  # the refusals changed nothing


def test_referral_bonus_goes_to_the_referrer(app):
    first = register(app)
    second = register(app, phone="13900139000", referrer_phone="13800138000")
    assert second.referral_bonus == 50
    assert members.show_member(app, card_no=first.card_no).balance == 50


def test_registration_retry_with_the_same_request_id_registers_once(app):
    a = members.register_member(app, "13800138000", True, request_id="reg-1")
    b = members.register_member(app, "13800138000", True, request_id="reg-1")
    assert a.member_id == b.member_id and a.card_no == b.card_no
    assert events(app) == ["member.registered"]


def test_purchase_accrual_is_idempotent_by_receipt(app):
    card = register(app).card_no
    first = points.accrue_purchase(app, card, 12_345, "R-1")
    again = points.accrue_purchase(app, card, 12_345, "R-1")
    assert (first.points, first.duplicate, again.duplicate) == (123, False, True)
    assert members.show_member(app, card_no=card).balance == 123
    with pytest.raises(Refusal) as err:
        points.accrue_purchase(app, card, 99_999, "R-1")
    assert err.value.code == "receipt_conflict"


@pytest.mark.parametrize("amount", [0, -5, 10**9])
def test_bad_purchase_amounts_change_nothing(app, amount):
    card = register(app).card_no
    with pytest.raises(InvalidInput):
        points.accrue_purchase(app, card, amount, "R-x")
    assert events(app, "points.accrued") == []


@pytest.mark.parametrize("amount", [0, -5])
def test_the_ledger_itself_refuses_a_credit_that_is_not_positive(app, amount):
    card = register(app).card_no
    before = verify_ledger(app)
    with pytest.raises(ValueError, match="positive"), transaction(app) as tx:
        member, _ = members.usable_member(tx, card)
        ledger.credit(tx, member, amount, "purchase", "R-x")
    assert verify_ledger(app) == before
    assert members.show_member(app, card_no=card).balance == 0


def test_unknown_and_mistyped_cards(app):
    register(app)
    with pytest.raises(NotFound):
        points.accrue_purchase(app, "2900000000025", 100, "R-1")
    with pytest.raises(InvalidInput):
        points.accrue_purchase(app, "2900000000019", 100, "R-1")


def test_member_day_multiplies_and_tier_upgrades_at_once(make_app, clock):
    app = make_app("[[points.member_days]]\nday_of_month = 2\nmultiplier_pct = 200\n")
    card = register(app).card_no
    acc = points.accrue_purchase(app, card, 100_000, "R-1")  # 1000 yuan on the 2nd: x2
    assert acc.points == 2000 and acc.upgraded_to is None
    acc = points.accrue_purchase(app, card, 100_000, "R-2")  # reaches 2000 yuan: silver now
    assert acc.upgraded_to == "silver"
    clock.advance(days=1)
    acc = points.accrue_purchase(app, card, 10_000, "R-3")  # silver multiplier 120 %
    assert acc.points == 120


def test_downgrade_only_at_period_end(app, clock):
    card = register(app).card_no
    points.accrue_purchase(app, card, 200_000, "R-1")
    assert members.show_member(app, card_no=card).tier == "silver"
    clock.advance(days=200)
    assert review_tiers(app).downgraded == 0
    assert members.show_member(app, card_no=card).tier == "silver"
    clock.advance(days=170)  # past the 12-month period, and the spend fell out of it
    result = review_tiers(app)
    assert result.downgraded == 1
    assert members.show_member(app, card_no=card).tier == "normal"


def test_pending_points_wait_for_the_return_window(make_app, clock):
    app = make_app("[points]\npending_days = 7\n")
    card = register(app).card_no
    points.accrue_purchase(app, card, 50_000, "R-1")
    view = members.show_member(app, card_no=card)
    assert (view.balance, view.available, view.pending) == (500, 0, 500)
    clock.advance(days=7)
    assert members.show_member(app, card_no=card).available == 500


def test_daily_checkin_once_per_store_day(app, clock):
    card = register(app).card_no
    assert points.check_in(app, card).points == 5
    with pytest.raises(Refusal) as err:
        points.check_in(app, card)
    assert err.value.code == "already_checked_in"
    clock.advance(hours=14)  # 00:00 next day in Shanghai
    assert points.check_in(app, card).balance == 10


def test_birthday_bonus_in_the_birthday_month_once_a_year(app, clock):
    card = register(app, birthday="1950-03-20").card_no
    other = register(app, phone="13900139000", birthday="1950-07-01").card_no
    assert points.claim_birthday_bonus(app, card).points == 100
    with pytest.raises(Refusal) as err:
        points.claim_birthday_bonus(app, card)
    assert err.value.code == "birthday_claimed"
    with pytest.raises(Refusal) as err:
        points.claim_birthday_bonus(app, other)
    assert err.value.code == "not_birthday_month"
    clock.now = datetime(2027, 3, 5, 2, 0, tzinfo=UTC)
    assert points.claim_birthday_bonus(app, card).points == 100


def test_expiry_writes_entries_and_runs_twice_harmlessly(app, clock):
    card = register(app).card_no
    points.accrue_purchase(app, card, 30_000, "R-1")  # earned March 2026
    clock.now = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)
    points.accrue_purchase(app, card, 10_000, "R-2")
    view = members.show_member(app, card_no=card)
    assert [(x.points, x.expires_on.isoformat()) for x in view.expiring] == [
        (300, "2027-03-31"),
        (100, "2027-09-30"),
    ]
    run = points.expire_points(app, datetime(2027, 3, 31, 16, 0, tzinfo=UTC))
    assert (run.lots, run.points) == (1, 300)
    assert points.expire_points(app, datetime(2027, 3, 31, 16, 0, tzinfo=UTC)).lots == 0
    assert members.show_member(app, card_no=card).balance == 100
    assert verify_ledger(app).ok


def test_lost_card_is_blocked_and_the_replacement_carries_the_balance(app):
    card = register(app).card_no
    points.accrue_purchase(app, card, 10_000, "R-1")
    clerk = staff.add_staff(app, "c1", "clerk", "2580")
    cards.report_lost_card(app, card, clerk)
    shown = members.show_member(app, phone="13800138000")  # staff find the lost card by phone
    assert (shown.card_no, shown.card_state) == (card, "lost")
    with pytest.raises(Refusal) as err:
        points.accrue_purchase(app, card, 100, "R-2")
    assert err.value.code == "card_lost"
    with pytest.raises(Refusal) as err:
        members.identify(app, card)
    assert err.value.code == "card_lost"
    change = cards.replace_card(app, card, clerk)
    assert change.balance == 100
    assert change.new_card_no is not None
    view = members.identify(app, change.new_card_no)
    assert view.balance == 100 and view.card_no == change.new_card_no
    with pytest.raises(Refusal) as err:
        cards.replace_card(app, card, clerk)
    assert err.value.code == "card_already_replaced"
    assert events(app, "card.blocklist") == ["card.blocklist", "card.blocklist"]


def test_card_range_is_owned_by_the_device(make_app):
    app = make_app("[device]\ncard_range_start = 500\ncard_range_end = 501\n")
    assert register(app).card_no.startswith("2900000005")
    register(app, phone="13900139000")
    with pytest.raises(Refusal) as err:
        register(app, phone="13700137000")
    assert err.value.code == "card_range_exhausted"


def test_deletion_erases_personal_data_and_keeps_the_ledger(app):
    card = register(app, name="王女士", birthday="1950-03-09").card_no
    points.accrue_purchase(app, card, 10_000, "R-1")
    sup = staff.add_staff(app, "s1", "supervisor", "2580")
    clerk = staff.add_staff(app, "c1", "clerk", "1357", by=sup)
    with pytest.raises(PermissionDenied) as err:
        members.delete_member(app, clerk, card_no=card)
    assert err.value.code == "not_permitted"
    done = members.delete_member(app, sup, card_no=card)
    assert done.cards_blocked == [card] and done.ledger_entries_kept == 1
    with app.db.read() as s:
        m = s.get(Member, done.member_id)
        assert (m.phone_hash, m.phone_cipher) == (None, None)
        assert (m.name_cipher, m.birthday_cipher) == (None, None)
        assert (personal.name_of(app, m), personal.birthday_of(app, m)) == (None, None)
    with app.db.read() as s:  # the registration still waiting for HQ forgot them too
        payload = s.scalar(
            select(OutboxEvent.payload).where(OutboxEvent.kind == "member.registered")
        )
    assert "personal" not in json.loads(payload)
    sent = json.loads(personal.as_sent(app, payload))["data"]
    assert "name" not in sent and "birthday" not in sent
    register(app)  # the phone number is free again
    assert verify_ledger(app).ok


def test_member_code_is_verified_offline_and_refused_when_replayed(app, clock):
    from edge.security.codes import mint_member_code

    card = register(app).card_no
    key = app.keys.member_code_signing_key("")
    code = mint_member_code(key, card, clock.now)
    assert members.identify(app, code).card_no == card
    with pytest.raises(Refusal) as err:
        members.identify(app, code)
    assert err.value.code == "code_replayed"
    stale = mint_member_code(key, card, clock.now - timedelta(seconds=151))
    with pytest.raises(Refusal) as err:
        members.identify(app, stale)
    assert err.value.code == "code_expired"


def test_find_member_id_by_card_and_phone(app):
    reg = register(app)
    assert members.find_member_id(app, card_no=reg.card_no) == reg.member_id
    assert members.find_member_id(app, phone="138 0013 8000") == reg.member_id
    assert members.find_member_id(app, phone="13900139000") is None
    with app.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 1


def test_expiry_leaves_other_stores_lots_to_the_store_that_issued_them(app, clock):
    card = register(app).card_no
    points.accrue_purchase(app, card, 30_000, "R-1")
    with app.db.write() as s:  # a lot replicated from another store's kiosk
        from edge.storage.models import LedgerEntry, PointsLot

        s.execute(update(LedgerEntry).values(device_id="K999"))
        assert s.scalar(select(func.count()).select_from(PointsLot)) == 1
    run = points.expire_points(app, datetime(2027, 4, 1, 0, 0, tzinfo=UTC))
    assert run.lots == 0
