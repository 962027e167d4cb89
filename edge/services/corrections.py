"""Corrections at the member desk: adjust points, refund a receipt, settle an overdraft.

Each is one transaction with its ledger entries, its audit record and its event for HQ. A
correction that leaves a member below zero flags the member for staff (as an offline double
spend does); one that brings a flagged member back to zero or above clears the flag, and HQ
clears its alert when it hears of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from edge.app import AppContext
from edge.domain.corrections import (
    SETTLEMENT_REASONS,
    Reason,
    adjustment_points,
    clean_note,
    needs_approval,
    parse_reason,
    refund_amount,
    refund_share,
)
from edge.domain.errors import InvalidInput, PermissionDenied, Refusal
from edge.domain.points import EntryKind, reference_id
from edge.domain.staff import Permission
from edge.services.ledger import EntryRecord, open_lots, pay_back_then_credit, take_back
from edge.services.members import usable_member
from edge.services.remote import ensure_here
from edge.services.staff import StaffIdentity, require
from edge.services.tx import Tx, transaction
from edge.storage.models import Adjustment, LedgerEntry, Member, PointsLot, Purchase, Refund


@dataclass(frozen=True)
class AdjustmentResult:
    adjustment_id: str
    member_id: str
    card_no: str
    points: int
    reason: str
    note: str
    balance: int
    staff_id: str
    approved_by: str | None
    overdraft: bool


def _approve(
    app: AppContext, staff: StaffIdentity, approver: StaffIdentity | None, points: int
) -> str | None:
    """The approver's id when the amount needs one (refused without), else None."""
    require(staff, Permission.ADJUST_POINTS)
    limit = app.config.desk.adjust_approval_above
    if approver is None:
        if needs_approval(points, limit):
            raise PermissionDenied(
                f"adjusting more than {limit} points needs a supervisor's approval",
                code="approval_needed",
                limit=limit,
            )
        return None
    if approver.staff_id == staff.staff_id:
        raise PermissionDenied(
            "the approval must come from a second staff member", code="approval_by_self"
        )
    require(approver, Permission.APPROVE_ADJUSTMENT)
    return approver.staff_id


def _follow_overdraft(tx: Tx, member: Member, actor: str) -> bool:
    """Flags a member left below zero, clears the flag of one back at zero or above;
    whether the member is now flagged."""
    if member.balance < 0 and not member.overdraft_flagged:
        member.overdraft_flagged = True
        tx.audit(actor, "member.overdraft_flagged", member.id, balance=member.balance)
    elif member.balance >= 0 and member.overdraft_flagged:
        member.overdraft_flagged = False
        tx.audit(actor, "member.overdraft_cleared", member.id, balance=member.balance)
    return member.overdraft_flagged


def adjust_points(
    app: AppContext,
    card_no: str,
    points: int,
    reason: str,
    note: str,
    staff: StaffIdentity,
    approver: StaffIdentity | None = None,
) -> AdjustmentResult:
    """Credits (``points`` > 0) or takes (< 0) points with a reason and a note.

    Above ``[desk] adjust_approval_above`` a second staff member with the approval permission
    must sign off. A credit pays back an overdraft first. A debit takes from the member's lots
    (soonest to expire first, held ones too); one larger than the balance is refused unless
    approved, and then leaves the member flagged below zero.

    Raises:
        InvalidInput: a bad amount, reason or note.
        PermissionDenied: the staff member may not adjust, or the approval is missing.
        Refusal: the card cannot be used, or a debit beyond the balance without approval.
    """
    amount = adjustment_points(points)
    why = parse_reason(reason)
    text = clean_note(note)
    approved_by = _approve(app, staff, approver, amount)
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        member, card = usable_member(tx, card_no)
        if amount < 0 and -amount > member.balance and approved_by is None:
            raise Refusal(
                f"the member has {member.balance} points; taking {-amount} needs a "
                "supervisor's approval",
                code="beyond_balance",
                balance=member.balance,
            )
        return _book_adjustment(tx, member, card.card_no, amount, why, text, staff, approved_by)


def settle_overdraft(
    app: AppContext,
    card_no: str,
    how: str,
    note: str,
    staff: StaffIdentity,
    approver: StaffIdentity | None = None,
) -> AdjustmentResult:
    """Brings a flagged member's negative balance back to zero: ``overdraft_settled`` (the
    member made it good) or ``overdraft_written_off`` (the chain absorbs it), with a note.
    The flag clears here and HQ clears its alert when the event reaches it."""
    why = parse_reason(how, SETTLEMENT_REASONS)
    text = clean_note(note)
    if not text:
        raise InvalidInput("a settlement needs a note saying what happened", code="bad_note")
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        member, card = usable_member(tx, card_no)
        if member.balance >= 0:
            raise Refusal(
                f"this member owes nothing (balance {member.balance})", code="no_overdraft"
            )
        amount = -member.balance
        approved_by = _approve(app, staff, approver, amount)
        return _book_adjustment(tx, member, card.card_no, amount, why, text, staff, approved_by)


def _book_adjustment(
    tx: Tx,
    member: Member,
    card_no: str,
    amount: int,
    why: Reason,
    note: str,
    staff: StaffIdentity,
    approved_by: str | None,
) -> AdjustmentResult:
    adjustment_id = tx.new_id()
    ref = f"{why.value}:{adjustment_id}"
    if amount > 0:
        entries = pay_back_then_credit(tx, member, amount, EntryKind.ADJUSTMENT, ref)
    else:
        entries = take_back(
            tx, member, -amount, EntryKind.ADJUSTMENT, ref, open_lots(tx, member.id)
        )
    tx.session.add(
        Adjustment(
            id=adjustment_id,
            member_id=member.id,
            points=amount,
            reason=why.value,
            note=note,
            staff_id=staff.staff_id,
            approved_by=approved_by,
            created_at=tx.now,
        )
    )
    actor = f"staff:{staff.staff_id}"
    flagged = _follow_overdraft(tx, member, actor)
    tx.audit(
        actor,
        "points.adjust",
        member.id,
        adjustment_id=adjustment_id,
        points=amount,
        reason=why.value,
        note=note,
        approved_by=approved_by,
        balance=member.balance,
    )
    tx.emit(
        "points.adjusted",
        {
            "member_id": member.id,
            "card_no": card_no,
            "adjustment_id": adjustment_id,
            "reason": why.value,
            "note": note,
            "staff_id": staff.staff_id,
            "approved_by": approved_by,
            "entries": [e.as_dict() for e in entries],
        },
    )
    return AdjustmentResult(
        adjustment_id,
        member.id,
        card_no,
        amount,
        why.value,
        note,
        member.balance,
        staff.staff_id,
        approved_by,
        flagged,
    )


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    receipt_id: str
    card_no: str
    amount_cents: int
    points: int
    balance: int
    overdraft: bool
    duplicate: bool


def refund_purchase(
    app: AppContext, receipt_id: str, refund_id: str, amount_cents: int, actor: str = "lane"
) -> RefundResult:
    """Takes back the points a receipt earned, in proportion to the money refunded.

    The refund id is the idempotency key: a resent refund returns the first result, one with
    other details is refused. The points come back from the lots the receipt credited; what
    was already spent leaves the balance below zero and the member flagged for staff.

    Raises:
        InvalidInput: a bad id or amount, or a refund larger than what is left of the receipt.
        Refusal: the receipt is not known here, or the refund id was used with other details.
    """
    rid = reference_id(receipt_id)
    fid = reference_id(refund_id, "refund id")
    refund_amount(amount_cents)
    with transaction(app) as tx:
        seen = tx.session.get(Refund, fid)
        if seen is not None:
            if seen.receipt_id != rid or seen.amount_cents != amount_cents:
                raise Refusal(
                    f"refund {fid} was already booked with different details",
                    code="refund_conflict",
                )
            return _refund_result(tx, seen, duplicate=True)
        purchase = tx.session.get(Purchase, rid)
        if purchase is None:
            raise Refusal(
                f"receipt {rid} is not known here: no points were earned on it at this store",
                code="unknown_receipt",
            )
        member = tx.session.get(Member, purchase.member_id)
        assert member is not None
        refunded = tx.session.scalar(
            select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(Refund.receipt_id == rid)
        )
        share = refund_share(
            purchase.amount_cents, purchase.points, int(refunded or 0), amount_cents
        )
        lots = list(
            tx.session.scalars(
                select(PointsLot)
                .join(LedgerEntry, LedgerEntry.lot_id == PointsLot.id)
                .where(LedgerEntry.kind == EntryKind.PURCHASE, LedgerEntry.ref == rid)
                .order_by(PointsLot.id)
            )
        )
        entries: list[EntryRecord] = []
        if share.points:
            entries = take_back(tx, member, share.points, EntryKind.REFUND, fid, lots)
        refund = Refund(
            id=fid,
            receipt_id=rid,
            member_id=member.id,
            amount_cents=amount_cents,
            points=share.points,
            actor=actor[:64],
            store_id=app.store_id,
            created_at=tx.now,
        )
        tx.session.add(refund)
        _follow_overdraft(tx, member, actor)
        tx.audit(
            actor,
            "points.refund",
            member.id,
            refund_id=fid,
            receipt_id=rid,
            amount_cents=amount_cents,
            points=share.points,
            balance=member.balance,
        )
        tx.emit(
            "points.refunded",
            {
                "member_id": member.id,
                "card_no": purchase.card_no,
                "refund_id": fid,
                "receipt_id": rid,
                "amount_cents": amount_cents,
                "entries": [e.as_dict() for e in entries],
            },
        )
        tx.session.flush()
        return _refund_result(tx, refund, duplicate=False)


def _refund_result(tx: Tx, refund: Refund, duplicate: bool) -> RefundResult:
    member = tx.session.get(Member, refund.member_id)
    purchase = tx.session.get(Purchase, refund.receipt_id)
    assert member is not None and purchase is not None
    return RefundResult(
        refund.id,
        refund.receipt_id,
        purchase.card_no,
        refund.amount_cents,
        refund.points,
        member.balance,
        member.overdraft_flagged,
        duplicate,
    )
