"""Handing gifts over against their vouchers (核销): once per voucher, reprints included."""

from __future__ import annotations

import json
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from edge.config import OFFLINE_DEFAULTS, POINTS_DEFAULTS
from edge.domain.errors import KioskError, NotFound, PermissionDenied, Refusal
from edge.protocol import RULES_SIGNING_DOMAIN, Event, OfflineRules, PointsRules, Rules
from edge.security.codes import mint_member_code, sign_voucher
from edge.services import gifts, members, points, staff
from edge.services.connectivity import record_hq_contact
from edge.services.pushes import apply_rules
from edge.services.verify import verify_ledger
from edge.services.vouchers import collect_voucher, lapse_vouchers
from edge.storage.models import AuditRecord, Gift, OutboxEvent, Redemption, VoucherCollection
from hq.commands import sign_message

CLERK = staff.StaffIdentity("c1", "clerk")

SYNCED = """
[sync]
enabled = true
[offline]
offline_after_s = 60
"""


def redeemed(app):
    card = members.register_member(app, "13800138000", True).card_no
    points.accrue_purchase(app, card, 1000 * 100, "R-1")
    gifts.add_gift(app, "TOWEL", "毛巾", 300, 5)
    return gifts.redeem_gift(app, card, "TOWEL", request_id="q-TOWEL")


def counts(app):
    """What a refusal must leave as it was: handovers, audit records, outbox events."""
    with app.db.read() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(table))
            for table in (VoucherCollection, AuditRecord, OutboxEvent)
        )


def events(app, kind):
    with app.db.read() as s:
        rows = s.scalars(select(OutboxEvent.payload).where(OutboxEvent.kind == kind))
        return [json.loads(p) for p in rows]


def test_a_gift_is_handed_over_once_and_its_reprint_is_refused(app, clock):
    r = redeemed(app)
    reprint = gifts.last_redemption(app)  # what the staff screen's reprint prints
    assert reprint is not None and reprint.voucher_code == r.voucher_code
    clock.advance(hours=2)
    done = collect_voucher(app, r.voucher_code, CLERK)
    assert (done.sku, done.name, done.qty, done.card_no) == ("TOWEL", "毛巾", 1, r.card_no)
    assert done.verified and not done.offline and done.voucher_id == r.redemption_id
    assert done.valid_until == date(2026, 4, 1)  # 2 March + 30 days, as printed
    before = counts(app)
    clock.advance(minutes=5)
    with pytest.raises(Refusal) as err:
        collect_voucher(app, "  " + reprint.voucher_code + "\n", CLERK)
    assert err.value.code == "voucher_collected"
    assert "2026-03-02 12:00" in err.value.message  # store-local time of the handover
    assert counts(app) == before
    [event] = events(app, "gift.collected")
    data = Event.model_validate({**event, "seq": 1}).typed_data
    assert data is not None and data.model_dump() == {
        "voucher_id": r.redemption_id,
        "issuer_device_id": "K001",
        "redemption_id": r.redemption_id,
        "sku": "TOWEL",
        "qty": 1,
        "staff_id": "c1",
        "verified": True,
        "offline": False,
    }


def test_a_voucher_is_good_through_its_printed_date_and_not_after(make_app, clock):
    app = make_app("[gifts]\nvoucher_valid_days = 7\n")
    r = redeemed(app)
    assert r.voucher_valid_until == date(2026, 3, 9)
    assert gifts.last_redemption(app).voucher_valid_until == date(2026, 3, 9)
    other = redeemed_second(app)
    clock.advance(days=7, hours=13)  # 23:00 on 9 March in Shanghai: the last day
    assert collect_voucher(app, r.voucher_code, CLERK).valid_until == date(2026, 3, 9)
    clock.advance(hours=1)  # midnight: 10 March
    before = counts(app)
    with pytest.raises(Refusal) as err:
        collect_voucher(app, other.voucher_code, CLERK)
    assert (err.value.code, err.value.message) == (
        "voucher_expired",
        "this voucher expired on 2026-03-09",
    )
    clock.advance(days=7)
    with pytest.raises(Refusal) as err:
        collect_voucher(app, other.voucher_code, CLERK)
    assert err.value.code == "voucher_expired"
    assert counts(app) == before


def redeemed_second(app):
    """A second voucher of another member, printed with the first."""
    card = members.register_member(app, "13900139000", True).card_no
    points.accrue_purchase(app, card, 1000 * 100, "R-2")
    return gifts.redeem_gift(app, card, "TOWEL", request_id="q-second")


def _tampered(code: str) -> str:
    return code[:-3] + ("AAA" if code[-3:] != "AAA" else "BBB")


@pytest.mark.parametrize(
    ("make_code", "code"),
    [
        (lambda app, r: _tampered(r.voucher_code), "voucher_forged"),
        (
            lambda app, r: sign_voucher(
                Ed25519PrivateKey.generate(), "gift", r.redemption_id, "K001"
            ),
            "voucher_forged",
        ),
        (
            lambda app, r: sign_voucher(
                app.keys.device_signing_key, "gift", "01JD0NOSUCHREDEMPTION00000", "K001"
            ),
            "unknown_voucher",
        ),
        (
            lambda app, r: sign_voucher(app.keys.device_signing_key, "gift", r.coupon_id, "K001"),
            "unknown_voucher",
        ),
        (lambda app, r: r.coupon_code, "not_a_gift_voucher"),
        (lambda app, r: "6200000000000001", "voucher_malformed"),
        (lambda app, r: "V1" + "A" * 600, "voucher_malformed"),
        (lambda app, r: "", "voucher_malformed"),
        (lambda app, r: "V1\x00\ud800", "voucher_malformed"),
        (
            lambda app, r: mint_member_code(app.keys.device_signing_key, r.card_no, app.clock()),
            "voucher_malformed",
        ),
    ],
    ids=[
        "tampered",
        "signed-by-another-key",
        "no-such-redemption",
        "a-coupon-id-signed-as-a-gift",
        "coupon",
        "card-number",
        "too-long",
        "empty",
        "binary",
        "member-code",
    ],
)
def test_bad_codes_get_a_one_line_refusal_and_change_nothing(app, make_code, code):
    r = redeemed(app)
    coupon = redeemed_coupon(app)

    class Codes:
        voucher_code = r.voucher_code
        redemption_id = r.redemption_id
        card_no = r.card_no
        coupon_code = coupon.coupon_codes[0]
        coupon_id = coupon.redemption_id

    before = counts(app)
    with pytest.raises(KioskError) as err:
        collect_voucher(app, make_code(app, Codes), CLERK)
    assert err.value.code == code and "\n" not in err.value.message
    assert isinstance(err.value, NotFound if code == "unknown_voucher" else Refusal)
    assert counts(app) == before
    assert collect_voucher(app, r.voucher_code, CLERK).verified  # the real one still works


def redeemed_coupon(app):
    gifts.add_gift(app, "C5", "5元券", 100, 5, kind="coupon", coupon_value_cents=500)
    card = members.register_member(app, "13700137000", True).card_no
    points.accrue_purchase(app, card, 1000 * 100, "R-3")
    return gifts.redeem_gift(app, card, "C5", request_id="q-coupon")


def test_only_staff_allowed_to_hand_gifts_over_may(app):
    r = redeemed(app)
    tech = staff.StaffIdentity("t1", "technician")
    before = counts(app)
    with pytest.raises(PermissionDenied):
        collect_voucher(app, r.voucher_code, tech)
    assert counts(app) == before


@pytest.mark.parametrize("hq", ["unreachable", "not answering"])
def test_another_kiosks_voucher_is_taken_on_this_desks_record_without_hq(make_app, clock, hq):
    """HQ unreachable, or reachable but not answering in time (here no agent answers)."""
    app = make_app(SYNCED)
    key = Ed25519PrivateKey.generate()  # K777's, which this kiosk does not hold
    theirs = sign_voucher(key, "gift", "01JD0THEIRREDEMPTION000000", "K777")
    with app.db.write() as s:
        record_hq_contact(s, clock.now)
    if hq == "unreachable":
        clock.advance(minutes=5)  # HQ silent: this desk's record decides
    done = collect_voucher(app, theirs, CLERK)
    assert not done.verified and done.offline and done.issuer_device_id == "K777"
    assert (done.sku, done.qty, done.valid_until) == ("", 0, None)
    before = counts(app)
    with pytest.raises(Refusal) as err:
        collect_voucher(app, theirs, CLERK)
    assert err.value.code == "voucher_collected"
    assert counts(app) == before
    [event] = events(app, "gift.collected")
    assert event["data"]["verified"] is False and event["data"]["redemption_id"] is None
    assert event["data"]["issuer_device_id"] == "K777"
    # a device id no kiosk has is no voucher any kiosk printed
    odd = sign_voucher(key, "gift", "01JD0THEIRREDEMPTION000001", "K 777")
    with pytest.raises(Refusal) as err:
        collect_voucher(app, odd, CLERK)
    assert err.value.code == "voucher_malformed"
    # another kiosk's coupon is still not a gift voucher
    coupon = sign_voucher(key, "coupon", "01JD0THEIRCOUPON0000000000", "K777")
    with pytest.raises(Refusal) as err:
        collect_voucher(app, coupon, CLERK)
    assert err.value.code == "not_a_gift_voucher"


def stock(app, sku="TOWEL"):
    with app.db.read() as s:
        return s.get(Gift, sku).stock


@pytest.mark.parametrize("refund", [False, True], ids=["points-kept", "points-returned"])
def test_an_uncollected_voucher_lapses_after_its_date_by_hqs_rule(make_app, clock, refund):
    app = make_app(f"[points]\nexpired_voucher_refund = {str(refund).lower()}\n")
    r = redeemed(app)  # 300 points, valid until 1 April
    done = redeemed_second(app)
    collect_voucher(app, done.voucher_code, CLERK)
    assert (stock(app), balance(app, r.card_no)) == (3, 700)
    clock.advance(days=30, hours=13)  # 23:00 on 1 April in Shanghai: still good
    assert lapse_vouchers(app).vouchers == 0
    clock.advance(hours=1)
    run = lapse_vouchers(app)
    assert (run.vouchers, run.points_returned, run.refund) == (1, 300 if refund else 0, refund)
    assert stock(app) == 4  # the collected one's gift stays handed over
    assert balance(app, r.card_no) == (1000 if refund else 700)
    [event] = events(app, "gift.voucher_lapsed")
    data = Event.model_validate({**event, "seq": 1}).typed_data
    assert data is not None and data.model_dump()["points_returned"] == run.points_returned
    assert [e["kind"] for e in event["data"]["entries"]] == (["voucher_return"] if refund else [])
    before = counts(app)
    assert lapse_vouchers(app).vouchers == 0  # again: nothing changes
    assert counts(app) == before
    with pytest.raises(Refusal) as err:
        collect_voucher(app, r.voucher_code, CLERK)
    assert err.value.code == "voucher_expired"
    assert verify_ledger(app).ok


def balance(app, card_no):
    return members.show_member(app, card_no=card_no).balance


def test_hqs_rules_set_whether_lapsed_vouchers_return_points(app):
    assert app.config.points.expired_voucher_refund is False
    hq_key = Ed25519PrivateKey.generate()
    rules = Rules(
        version=2,
        issued_at=app.clock(),
        points=PointsRules(**{**POINTS_DEFAULTS, "expired_voucher_refund": True}),
        offline=OfflineRules(**OFFLINE_DEFAULTS),
    )
    rules = sign_message(hq_key, RULES_SIGNING_DOMAIN, rules)
    assert apply_rules(app, rules, hq_key.public_key()).applied
    assert app.config.points.expired_voucher_refund is True
    older = Rules.model_validate_json(
        rules.model_dump_json(exclude={"points": {"expired_voucher_refund"}})
    )
    assert older.points.expired_voucher_refund is False  # rules from before it: none returned


def test_vouchers_printed_before_their_date_was_kept_never_lapse(app, clock):
    r = redeemed(app)
    with app.db.write() as s:
        s.get(Redemption, r.redemption_id).voucher_valid_until = None
    clock.advance(days=40)
    assert lapse_vouchers(app).vouchers == 0 and stock(app) == 4
    with pytest.raises(Refusal) as err:  # its printed 30 days are past all the same
        collect_voucher(app, r.voucher_code, CLERK)
    assert err.value.code == "voucher_expired"
