"""Redemption, coupons, staff lockout, offline limits and the audit chain on a real database."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select

from edge.domain.errors import NotFound, PermissionDenied, Refusal
from edge.security.codes import verify_voucher
from edge.services import gifts, members, points, staff
from edge.services.connectivity import record_hq_contact
from edge.services.verify import verify_ledger
from edge.storage.models import Gift, OutboxEvent


def member_with_points(app, pts=1000, phone="13800138000"):
    card = members.register_member(app, phone, True).card_no
    points.accrue_purchase(app, card, pts * 100, f"R-{phone}")
    return card


def stock(app, sku):
    with app.db.read() as s:
        return s.get(Gift, sku).stock


def test_redeem_deducts_points_and_stock_and_signs_a_voucher(app):
    card = member_with_points(app)
    gifts.add_gift(app, "TOWEL", "毛巾", 300, 3, low_stock=1)
    r = gifts.redeem_gift(app, card, "TOWEL", 2, request_id="q-1")
    assert (r.points, r.balance, r.low_stock) == (600, 400, True)
    assert stock(app, "TOWEL") == 1
    claims = verify_voucher(app.keys.device_signing_key.public_key(), r.voucher_code)
    assert (claims.kind, claims.voucher_id, claims.device_id) == ("gift", r.redemption_id, "K001")
    with app.db.read() as s:
        kinds = list(s.scalars(select(OutboxEvent.kind).order_by(OutboxEvent.seq)))
    assert kinds[-2:] == ["gift.redeemed", "alert.low_stock"]


def test_a_retried_redemption_applies_once(app):
    card = member_with_points(app)
    gifts.add_gift(app, "TOWEL", "毛巾", 300, 3)
    first = gifts.redeem_gift(app, card, "TOWEL", request_id="q-1")
    again = gifts.redeem_gift(app, card, "TOWEL", request_id="q-1")
    assert first.redemption_id == again.redemption_id and again.balance == 700
    assert stock(app, "TOWEL") == 2
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, card, "TOWEL", 2, request_id="q-1")
    assert err.value.code == "request_id_reused"


@pytest.mark.parametrize(
    ("price", "stock_", "limit", "qty", "code"),
    [
        (2000, 5, None, 1, "insufficient_points"),
        (100, 0, None, 1, "out_of_stock"),
        (100, 1, None, 2, "out_of_stock"),
        (100, 5, 1, 2, "limit_reached"),
    ],
)
def test_refusals_change_nothing(app, price, stock_, limit, qty, code):
    card = member_with_points(app)
    gifts.add_gift(app, "G", "礼品", price, stock_, per_member_limit=limit)
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, card, "G", qty, request_id="q-1")
    assert err.value.code == code
    assert stock(app, "G") == stock_
    assert members.show_member(app, card_no=card).balance == 1000


def test_stock_can_never_go_negative_even_bypassing_the_service(app):
    gifts.add_gift(app, "G", "礼品", 100, 1)
    conn = sqlite3.connect(app.data_dir / "kiosk.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE gift SET stock = -1 WHERE sku = 'G'")
    conn.close()


def test_last_unit_goes_to_one_member_only(app):
    a = member_with_points(app)
    b = member_with_points(app, phone="13900139000")
    gifts.add_gift(app, "G", "礼品", 100, 1)
    gifts.redeem_gift(app, a, "G", request_id="a")
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, b, "G", request_id="b")
    assert err.value.code == "out_of_stock"


def test_coupon_is_single_use_and_expires(app, clock):
    card = member_with_points(app)
    gifts.add_gift(
        app, "C10", "10元券", 200, 10, kind="coupon", coupon_value_cents=1000, coupon_valid_days=30
    )
    r = gifts.redeem_gift(app, card, "C10", 2, request_id="q")
    assert len(r.coupon_codes) == 2 and r.voucher_code == ""
    used = gifts.use_coupon(app, r.coupon_codes[0], "LANE-R1")
    assert used.value_cents == 1000
    with pytest.raises(Refusal) as err:
        gifts.use_coupon(app, r.coupon_codes[0], "LANE-R2")
    assert err.value.code == "coupon_used"
    clock.advance(days=31)
    with pytest.raises(Refusal) as err:
        gifts.use_coupon(app, r.coupon_codes[1], "LANE-R3")
    assert err.value.code == "coupon_expired"
    tampered = r.coupon_codes[1][:-3] + ("AAA" if r.coupon_codes[1][-3:] != "AAA" else "BBB")
    with pytest.raises(Refusal):
        gifts.use_coupon(app, tampered, "LANE-R4")


def test_restock_needs_permission(app):
    gifts.add_gift(app, "G", "礼品", 100, 1)
    tech = staff.add_staff(app, "t1", "technician", "2580")
    with pytest.raises(PermissionDenied):
        gifts.restock_gift(app, "G", 5, tech)
    with pytest.raises(NotFound):
        gifts.restock_gift(app, "NOPE", 5, staff.StaffIdentity("c", "clerk"))
    assert gifts.restock_gift(app, "G", 5, staff.StaffIdentity("c", "clerk")).stock == 6


def test_staff_lockout_persists_and_expires(app, clock):
    staff.add_staff(app, "c1", "clerk", "2580")
    for _ in range(4):
        with pytest.raises(PermissionDenied) as err:
            staff.authenticate_staff(app, "c1", "0000")
        assert err.value.code == "bad_credentials"
    with pytest.raises(PermissionDenied) as err:
        staff.authenticate_staff(app, "c1", "0000")
    assert err.value.code == "staff_locked"
    with pytest.raises(PermissionDenied) as err:  # even the right PIN waits out the lock
        staff.authenticate_staff(app, "c1", "2580")
    assert err.value.code == "staff_locked"
    clock.advance(minutes=30)
    assert staff.authenticate_staff(app, "c1", "2580").role == "clerk"


def test_second_staff_member_needs_a_supervisor(app):
    staff.add_staff(app, "s1", "supervisor", "2580")
    with pytest.raises(PermissionDenied):
        staff.add_staff(app, "c1", "clerk", "1357")
    clerk = staff.add_staff(app, "c1", "clerk", "1357", by=staff.StaffIdentity("s1", "supervisor"))
    with pytest.raises(PermissionDenied):
        staff.add_staff(app, "c2", "clerk", "1470", by=clerk)
    with pytest.raises(Refusal):
        staff.add_staff(app, "c1", "clerk", "1470", by=staff.StaffIdentity("s1", "supervisor"))


OFFLINE = """
[sync]
enabled = true
[offline]
offline_after_s = 60
max_points_per_redemption = 500
max_points_per_member = 800
max_points_per_device = 1000
max_offline_hours = 24
"""


def test_offline_caps_apply_while_hq_is_silent(make_app, clock):
    app = make_app(OFFLINE)
    a = member_with_points(app, 2000)
    b = member_with_points(app, 2000, phone="13900139000")
    gifts.add_gift(app, "G", "礼品", 300, 100)
    with app.db.write() as s:
        record_hq_contact(s, clock.now)
    r = gifts.redeem_gift(app, a, "G", 2, request_id="online")  # 600 > cap, but online
    assert not r.offline
    clock.advance(minutes=5)
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, a, "G", 2, request_id="too-big")
    assert err.value.code == "offline_cap_redemption"
    assert gifts.redeem_gift(app, a, "G", 1, request_id="o1").offline
    assert gifts.redeem_gift(app, a, "G", 1, request_id="o1b").offline  # member a: 600
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, a, "G", 1, request_id="o2")  # 900 > member cap 800
    assert err.value.code == "offline_cap_member"
    assert gifts.redeem_gift(app, b, "G", 1, request_id="o3").offline  # device: 900
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, b, "G", 1, request_id="o4")  # 1200 > device cap 1000
    assert err.value.code == "offline_cap_device"
    clock.advance(hours=25)
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, b, "G", 1, request_id="o5")
    assert err.value.code == "offline_paused"
    members.register_member(app, "13700137000", True)  # registration goes on
    from edge.services.status import audit_log

    refused = [x for x in audit_log(app) if x.action == "gift.redeem_refused_offline"]
    assert len(refused) == 4
    assert verify_ledger(app).ok


def test_audit_chain_detects_edits_deletions_and_truncation(app):
    member_with_points(app)
    assert verify_ledger(app).ok
    db = app.data_dir / "kiosk.db"
    conn = sqlite3.connect(db)
    (actor,) = conn.execute("SELECT actor FROM audit WHERE seq = 1").fetchone()
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    conn.commit()
    report = verify_ledger(app)
    assert not report.ok and "audit #1" in report.problems[0]
    conn.execute("UPDATE audit SET actor = ? WHERE seq = 1", (actor,))
    conn.commit()
    assert verify_ledger(app).ok  # put back as it was: the chain holds again
    conn.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    conn.commit()
    conn.close()
    report = verify_ledger(app)
    assert not report.ok and "latest records were removed" in report.problems[0]


def test_verify_catches_a_tampered_balance(app):
    card = member_with_points(app)
    conn = sqlite3.connect(app.data_dir / "kiosk.db")
    conn.execute("UPDATE member SET balance = balance + 1")
    conn.commit()
    conn.close()
    report = verify_ledger(app)
    assert not report.ok and "balance" in report.problems[0]
    assert members.show_member(app, card_no=card).balance == 1001


def test_verify_catches_a_purchase_without_its_credit_and_a_redemption_without_debits(app):
    card = member_with_points(app)
    gifts.add_gift(app, "G", "礼品", 100, 5)
    r = gifts.redeem_gift(app, card, "G", request_id="q")
    conn = sqlite3.connect(app.data_dir / "kiosk.db")
    conn.execute("UPDATE purchase SET points = points + 1")
    conn.execute("UPDATE redemption SET points = 99 WHERE id = ?", (r.redemption_id,))
    conn.commit()
    conn.close()
    problems = " ".join(verify_ledger(app).problems)
    assert "purchase R-13800138000" in problems
    assert f"redemption {r.redemption_id}" in problems


def test_an_overdraft_is_paid_back_before_anything_is_redeemed(app):
    card = member_with_points(app, 500)
    gifts.add_gift(app, "G", "礼品", 100, 5)
    with app.db.write() as s:  # HQ booked an offline double spend against this member
        from edge.storage.models import Member

        member = s.scalars(select(Member)).one()
        member.balance = -200
        member.overdraft_flagged = True
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, card, "G", request_id="q")
    assert err.value.code == "insufficient_points"
    assert "200 points owed" in err.value.message
