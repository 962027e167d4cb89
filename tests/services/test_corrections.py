"""Corrections at the member desk on a real database: adjustments with approval, refunds of
receipts, overdraft settlement; each checked against the ledger, the audit chain and the outbox."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from edge.domain.corrections import refund_share
from edge.domain.errors import InvalidInput, PermissionDenied, Refusal
from edge.protocol import AdjustmentData, Event, RefundData
from edge.services import corrections, gifts, members, points
from edge.services.staff import StaffIdentity
from edge.services.tiers import tier_measure
from edge.services.verify import verify_ledger
from edge.storage.models import AuditRecord, OutboxEvent

CLERK = StaffIdentity("c1", "clerk")
SUPERVISOR = StaffIdentity("s1", "supervisor")
TECH = StaffIdentity("t1", "technician")


def member(app, yuan=1000, phone="13800138000", receipt="R-1"):
    card = members.register_member(app, phone, True).card_no
    points.accrue_purchase(app, card, yuan * 100, receipt)
    return card


def balance(app, card):
    view = members.show_member(app, card_no=card)
    return view.balance, view.overdraft_flagged


def events(app, kind):
    with app.db.read() as s:
        rows = s.scalars(select(OutboxEvent.payload).where(OutboxEvent.kind == kind))
        return [Event.model_validate({**json.loads(p), "seq": 1}) for p in rows]


def audit_actions(app):
    with app.db.read() as s:
        return list(s.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))


def test_a_credit_is_booked_with_its_reason_audited_and_sent(app):
    card = member(app)
    r = corrections.adjust_points(app, card, 120, "missed_points", "receipt 88 not scanned", CLERK)
    assert (r.points, r.balance, r.reason, r.approved_by, r.overdraft) == (
        120,
        1120,
        "missed_points",
        None,
        False,
    )
    history = members.show_member(app, card_no=card).history
    line = next(h for h in history if h.kind == "adjustment")
    assert line.points == 120 and line.ref.startswith("missed_points:")
    (event,) = events(app, "points.adjusted")
    data = event.typed_data
    assert isinstance(data, AdjustmentData)
    assert (data.reason, data.note, data.staff_id) == (
        "missed_points",
        "receipt 88 not scanned",
        "c1",
    )
    assert sum(e.points for e in data.entries) == 120
    assert "points.adjust" in audit_actions(app)
    assert verify_ledger(app).ok


def test_a_large_adjustment_needs_a_second_staff_member(app):
    card = member(app)  # 1000 points; the default approval limit is 500
    for approver, code in [(None, "approval_needed"), (CLERK, "approval_by_self")]:
        with pytest.raises(PermissionDenied) as err:
            corrections.adjust_points(app, card, 800, "goodwill", "", CLERK, approver)
        assert err.value.code == code
    with pytest.raises(PermissionDenied):
        corrections.adjust_points(
            app, card, 800, "goodwill", "", CLERK, StaffIdentity("c2", "clerk")
        )
    with pytest.raises(PermissionDenied):
        corrections.adjust_points(app, card, 10, "goodwill", "", TECH)
    assert balance(app, card) == (1000, False)
    r = corrections.adjust_points(app, card, 800, "goodwill", "", CLERK, SUPERVISOR)
    assert (r.balance, r.approved_by) == (1800, "s1")
    assert verify_ledger(app).ok


def test_the_approval_limit_is_a_setting(make_app):
    app = make_app("[desk]\nadjust_approval_above = 50\n")
    card = member(app)
    with pytest.raises(PermissionDenied):
        corrections.adjust_points(app, card, 60, "goodwill", "", CLERK)
    assert corrections.adjust_points(app, card, 50, "goodwill", "", CLERK).balance == 1050


def test_a_debit_beyond_the_balance_is_refused_unless_approved_and_then_flagged(app):
    card = member(app, yuan=300)
    with pytest.raises(Refusal) as err:
        corrections.adjust_points(app, card, -400, "correction", "double credit", CLERK)
    assert err.value.code == "beyond_balance"
    assert balance(app, card) == (300, False)
    assert events(app, "points.adjusted") == []
    r = corrections.adjust_points(app, card, -400, "correction", "double credit", CLERK, SUPERVISOR)
    assert (r.balance, r.overdraft) == (-100, True)
    assert balance(app, card) == (-100, True)
    assert "member.overdraft_flagged" in audit_actions(app)
    assert verify_ledger(app).ok


@pytest.mark.parametrize(
    ("amount", "reason", "note", "error"),
    [
        (0, "goodwill", "", "bad_points"),
        (10, "because", "", "bad_reason"),
        (10, "overdraft_written_off", "", "bad_reason"),  # a settlement is its own command
        (10, "goodwill", "x" * 201, "bad_note"),
        (10, "goodwill", "bell\x07", "bad_note"),
    ],
)
def test_bad_adjustments_change_nothing(app, amount, reason, note, error):
    card = member(app)
    with pytest.raises(InvalidInput) as err:
        corrections.adjust_points(app, card, amount, reason, note, CLERK)
    assert err.value.code == error
    assert balance(app, card) == (1000, False)


def test_a_refund_after_a_redemption_leaves_a_flagged_negative_balance(app):
    card = member(app, yuan=1000, receipt="R-9")
    gifts.add_gift(app, "KETTLE", "电水壶", 800, 5)
    gifts.redeem_gift(app, card, "KETTLE", request_id="q-1")
    assert balance(app, card) == (200, False)
    r = corrections.refund_purchase(app, "R-9", "RF-1", 100_000, actor="lane:L1")
    assert (r.points, r.balance, r.overdraft, r.duplicate) == (1000, -800, True, False)
    assert balance(app, card) == (-800, True)
    (event,) = events(app, "points.refunded")
    data = event.typed_data
    assert isinstance(data, RefundData)
    assert (data.receipt_id, data.refund_id, data.amount_cents) == ("R-9", "RF-1", 100_000)
    # what the lot still held comes back from it, the rest is owed (no lot)
    assert sorted((e.points, e.lot_id is None) for e in data.entries) == [
        (-800, True),
        (-200, False),
    ]
    with pytest.raises(Refusal) as err:
        gifts.redeem_gift(app, card, "KETTLE", request_id="q-2")
    assert err.value.code == "insufficient_points"
    assert verify_ledger(app).ok


def test_partial_refunds_take_back_in_proportion_and_never_more_than_the_receipt(app):
    card = member(app, yuan=99, receipt="R-1")  # 99 points on 9,900 cents
    first = corrections.refund_purchase(app, "R-1", "RF-a", 3_300)
    second = corrections.refund_purchase(app, "R-1", "RF-b", 3_300)
    with pytest.raises(InvalidInput) as err:
        corrections.refund_purchase(app, "R-1", "RF-c", 3_301)
    assert err.value.code == "refund_too_large"
    third = corrections.refund_purchase(app, "R-1", "RF-c", 3_300)
    assert (first.points, second.points, third.points) == (33, 33, 33)
    assert balance(app, card) == (0, False)
    with pytest.raises(InvalidInput):
        corrections.refund_purchase(app, "R-1", "RF-d", 1)
    assert verify_ledger(app).ok


def test_a_resent_refund_is_harmless_and_a_reused_id_is_refused(app):
    card = member(app, receipt="R-1")
    first = corrections.refund_purchase(app, "R-1", "RF-1", 50_000)
    again = corrections.refund_purchase(app, "R-1", "RF-1", 50_000)
    assert again.duplicate and (again.points, again.balance) == (first.points, first.balance)
    with pytest.raises(Refusal) as err:
        corrections.refund_purchase(app, "R-1", "RF-1", 40_000)
    assert err.value.code == "refund_conflict"
    with pytest.raises(Refusal) as err:
        corrections.refund_purchase(app, "R-404", "RF-2", 100)
    assert err.value.code == "unknown_receipt"
    assert balance(app, card) == (500, False)
    assert len(events(app, "points.refunded")) == 1


def test_a_refund_counts_against_the_spend_that_keeps_a_tier(app):
    card = member(app, yuan=1000, receipt="R-1")
    before = _measure(app, card)
    corrections.refund_purchase(app, "R-1", "RF-1", 40_000)
    assert before - _measure(app, card) == 40_000


def _measure(app, card):
    view = members.show_member(app, card_no=card)
    with app.db.read() as s:
        return tier_measure(s, app, view.member_id, app.clock())


def test_an_overdraft_is_settled_or_written_off_and_the_flag_clears(app):
    card = member(app, yuan=300, receipt="R-1")
    gifts.add_gift(app, "G", "礼品", 300, 5)
    gifts.redeem_gift(app, card, "G", request_id="q-1")
    corrections.refund_purchase(app, "R-1", "RF-1", 30_000)
    assert balance(app, card) == (-300, True)
    with pytest.raises(InvalidInput):
        corrections.settle_overdraft(app, card, "overdraft_written_off", "  ", CLERK)
    with pytest.raises(InvalidInput):
        corrections.settle_overdraft(app, card, "goodwill", "returned the rice", CLERK)
    r = corrections.settle_overdraft(
        app, card, "overdraft_written_off", "gift already used; store manager agreed", CLERK
    )
    assert (r.points, r.balance, r.overdraft) == (300, 0, False)
    assert balance(app, card) == (0, False)
    assert "member.overdraft_cleared" in audit_actions(app)
    with pytest.raises(Refusal) as err:
        corrections.settle_overdraft(app, card, "overdraft_settled", "again", CLERK)
    assert err.value.code == "no_overdraft"
    # the debt was paid by an entry with no lot: nothing new to spend
    with pytest.raises(Refusal):
        gifts.redeem_gift(app, card, "G", request_id="q-2")
    assert verify_ledger(app).ok


def test_a_credit_pays_an_overdraft_back_first(app):
    card = member(app, yuan=300, receipt="R-1")
    corrections.adjust_points(app, card, -500, "correction", "", CLERK, SUPERVISOR)
    assert balance(app, card) == (-200, True)
    r = corrections.adjust_points(app, card, 250, "missed_points", "", CLERK)
    assert (r.balance, r.overdraft) == (50, False)
    gifts.add_gift(app, "G", "礼品", 50, 5)
    assert gifts.redeem_gift(app, card, "G", request_id="q-1").balance == 0
    assert verify_ledger(app).ok


@pytest.mark.parametrize(
    ("cents", "points", "refunded", "amount", "taken"),
    [(10_000, 100, 0, 10_000, 100), (10_000, 100, 0, 1, 0), (10_000, 100, 9_999, 1, 1)],
)
def test_refund_share_rounds_so_parts_add_up(cents, points, refunded, amount, taken):
    assert refund_share(cents, points, refunded, amount).points == taken
