"""HQ's members desk: find a member by card, member id or phone; what HQ holds of them
(ledger, cards, coupons, vouchers); block a card; adjust points with a reason, within the
desk's limit at once and beyond it only when a supervisor approves; settle an overdraft.

An adjustment made here is a ledger entry HQ books (device ``hq-desk``), in the transaction
that records it in HQ's audit log; the stores that hold the member get the member's new
snapshot through their feed, as after a merge. The console's members desk and
``kiosk hq member ...`` call these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edge.domain.cards import CardState
from edge.domain.corrections import (
    SETTLEMENT_REASONS,
    Reason,
    adjustment_points,
    clean_note,
    parse_reason,
)
from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.ids import IdFactory
from hq.audit import Actor, record
from hq.bulk import insert_rows
from hq.feeds import append, find_member, holders, lock_members
from hq.ledger import add_to_balances, clear_alert
from hq.merges import find_member_id
from hq.models import (
    CampaignCoupon,
    CentralCard,
    CentralEntry,
    CentralMember,
    GiftVoucher,
    HqAdjustment,
)

ADJUST_DEVICE = "hq-desk"  # the device id of the entries HQ's members desk books
LARGE_ADJUSTMENT = 1_000  # points, up or down: beyond this a supervisor approves
PhoneLookup = Callable[[str], str]


def _looks_like_phone(text: str) -> bool:
    digits = "".join(ch for ch in text if ch.isdigit())
    return len(digits) == 11 and digits.startswith("1") and len(text.strip()) <= 16


def find(session: Session, text: str, lookup: PhoneLookup | None = None) -> str:
    """The member a card number, member id or mobile number names.

    Raises:
        InvalidInput: nothing to search for, or a phone search without the chain's lookup key.
        NotFound: nobody matches.
    """
    text = text.strip()[:64]
    if not text:
        raise InvalidInput("type a card number, member id or mobile number", code="no_query")
    if _looks_like_phone(text):
        if lookup is None:
            raise InvalidInput(
                "phone search needs the chain's lookup key (hq-lookup.key in HQ's TLS folder)",
                code="no_lookup_key",
            )
        member_id = find_member(session, phone_hash=lookup(text))
        if member_id is None:
            raise NotFound("no member has this mobile number", code="unknown_phone")
        return member_id
    return find_member_id(session, text)


@dataclass(frozen=True)
class EntryRow:
    at: datetime
    kind: str
    points: int
    store_id: str
    device_id: str
    ref: str


@dataclass(frozen=True)
class CouponRow:
    coupon_id: str
    campaign_id: str
    issued_at: datetime
    used_at: datetime | None
    used_store_id: str | None


@dataclass(frozen=True)
class VoucherRow:
    voucher_id: str
    store_id: str
    sku: str
    name: str
    qty: int
    valid_until: object


@dataclass(frozen=True)
class AdjustmentRow:
    adjustment_id: str
    member_id: str
    points: int
    reason: str
    note: str
    state: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


@dataclass(frozen=True)
class MemberView:
    member_id: str
    store_id: str
    tier: str
    phone_masked: str
    balance: int
    overdraft: bool
    created_at: datetime
    merged_into: str | None
    deleted: bool
    cards: list[tuple[str, str, str]]
    entries: list[EntryRow]
    coupons: list[CouponRow]
    vouchers: list[VoucherRow]
    adjustments: list[AdjustmentRow]


def _adjustment(a: HqAdjustment) -> AdjustmentRow:
    return AdjustmentRow(
        a.adjustment_id,
        a.member_id,
        a.points,
        a.reason,
        a.note,
        a.state,
        a.requested_by,
        a.requested_at,
        a.decided_by,
        a.decided_at,
    )


def view(session: Session, member_id: str, entries: int = 200) -> MemberView:
    """What HQ holds of a member (the newest ``entries`` ledger entries)."""
    m = session.get(CentralMember, member_id)
    if m is None:
        raise NotFound(f"no member {member_id} at HQ", code="unknown_member")
    cards = session.execute(
        select(CentralCard.card_no, CentralCard.state, CentralCard.store_id)
        .where(CentralCard.member_id == m.id)
        .order_by(CentralCard.card_no)
    ).all()
    rows = session.execute(
        select(
            CentralEntry.at,
            CentralEntry.kind,
            CentralEntry.points,
            CentralEntry.store_id,
            CentralEntry.device_id,
            CentralEntry.ref,
        )
        .where(CentralEntry.member_id == m.id)
        .order_by(CentralEntry.at.desc(), CentralEntry.id.desc())
        .limit(entries)
    ).all()
    coupons = session.execute(
        select(
            CampaignCoupon.coupon_id,
            CampaignCoupon.campaign_id,
            CampaignCoupon.issued_at,
            CampaignCoupon.used_at,
            CampaignCoupon.used_store_id,
        )
        .where(CampaignCoupon.member_id == m.id)
        .order_by(CampaignCoupon.issued_at.desc())
        .limit(100)
    ).all()
    vouchers = session.execute(
        select(
            GiftVoucher.voucher_id,
            GiftVoucher.store_id,
            GiftVoucher.sku,
            GiftVoucher.name,
            GiftVoucher.qty,
            GiftVoucher.valid_until,
        )
        .where(GiftVoucher.member_id == m.id)
        .limit(100)
    ).all()
    adjustments = session.scalars(
        select(HqAdjustment)
        .where(HqAdjustment.member_id == m.id)
        .order_by(HqAdjustment.requested_at.desc())
        .limit(50)
    ).all()
    return MemberView(
        m.id,
        m.store_id,
        m.tier,
        m.phone_masked,
        m.balance,
        m.overdraft_flagged,
        m.created_at,
        m.merged_into,
        m.deleted,
        [(c, s, st) for c, s, st in cards],
        [EntryRow(*r) for r in rows],
        [CouponRow(*r) for r in coupons],
        [VoucherRow(*r) for r in vouchers],
        [_adjustment(a) for a in adjustments],
    )


def pending_adjustments(session: Session) -> list[AdjustmentRow]:
    return [
        _adjustment(a)
        for a in session.scalars(
            select(HqAdjustment)
            .where(HqAdjustment.state == "pending")
            .order_by(HqAdjustment.requested_at)
        )
    ]


def _locked_member(session: Session, member_id: str) -> CentralMember:
    lock_members(session, [member_id])
    member = session.scalar(
        select(CentralMember)
        .where(CentralMember.id == member_id)
        .execution_options(populate_existing=True)
    )
    if member is None:
        raise NotFound(f"no member {member_id} at HQ", code="unknown_member")
    if member.deleted or member.merged_into is not None:
        raise Refusal(
            "this member record is erased or merged into another: adjust the one it went into",
            code="member_closed",
        )
    return member


def _check(member: CentralMember, points: int, reason: Reason) -> None:
    if reason in SETTLEMENT_REASONS:
        if member.balance >= 0:
            raise Refusal("this member owes no points: nothing to settle", code="no_overdraft")
        if points != -member.balance:
            raise Refusal(
                f"settling brings the balance to zero: {-member.balance} points",
                code="settle_amount",
            )
    elif member.balance + points < 0:
        raise Refusal(
            f"this would take the balance below zero ({member.balance} + {points})",
            code="below_zero",
        )


def _apply(session: Session, a: HqAdjustment, member: CentralMember, now: datetime) -> None:
    insert_rows(
        session.connection(),
        CentralEntry,
        [
            {
                "id": a.adjustment_id,
                "member_id": member.id,
                "kind": "adjustment",
                "points": a.points,
                "lot_id": None,
                "ref": f"{a.reason}:{a.adjustment_id}",
                "store_id": member.store_id,
                "device_id": ADJUST_DEVICE,
                "at": now,
                "event_id": a.adjustment_id,
                "available_at": None,
                "expires_at": None,
            }
        ],
    )
    add_to_balances(session, {member.id: a.points}, now)
    session.flush()
    session.refresh(member)
    if member.overdraft_flagged and member.balance >= 0:
        member.overdraft_flagged = False
        clear_alert(session, "overdraft", member.id, now)
    member.updated_at = now
    stores = sorted(holders(session, [member.id]).get(member.id, set()) | {member.store_id})
    append(session, {s: [(None, member.id)] for s in stores})


def adjust(
    session: Session,
    member_id: str,
    points: int,
    reason: str,
    note: str,
    actor: Actor,
    now: datetime,
    *,
    may_approve: bool,
    ids: IdFactory | None = None,
) -> AdjustmentRow:
    """Adjust a member's points with a reason and a note: at once within
    :data:`LARGE_ADJUSTMENT` (or when ``may_approve``), else pending a supervisor.

    Raises:
        InvalidInput: bad points, reason or note.
        Refusal: below zero, a settlement of the wrong amount, a closed record.
    """
    points = adjustment_points(points)
    why = parse_reason(reason, frozenset(Reason))
    text = clean_note(note)
    if not text:
        raise InvalidInput("say why in a note", code="bad_note")
    member = _locked_member(session, member_id)
    _check(member, points, why)
    a = HqAdjustment(
        adjustment_id=(ids or IdFactory()).new(),
        member_id=member.id,
        points=points,
        reason=why.value,
        note=text,
        state="pending",
        requested_by=actor.name,
        requested_at=now,
    )
    session.add(a)
    large = abs(points) > LARGE_ADJUSTMENT
    if not large or may_approve:
        a.state, a.decided_by, a.decided_at = "applied", actor.name, now
        session.flush()
        _apply(session, a, member, now)
    session.flush()
    record(
        session,
        actor,
        "member.adjust" if a.state == "applied" else "member.adjust.request",
        member.id,
        now,
        before={"balance": member.balance - (points if a.state == "applied" else 0)},
        after={"balance": member.balance, "points": points, "reason": why.value, "note": text},
        store_id=member.store_id,
    )
    return _adjustment(a)


def decide(
    session: Session, adjustment_id: str, approve: bool, actor: Actor, now: datetime
) -> AdjustmentRow:
    """A supervisor approves (applies) or rejects a pending adjustment; never their own.

    Raises:
        NotFound, Refusal: not pending, one's own request, or the balance moved meanwhile.
    """
    a = session.scalar(
        select(HqAdjustment).where(HqAdjustment.adjustment_id == adjustment_id).with_for_update()
    )
    if a is None:
        raise NotFound(f"no adjustment {adjustment_id}", code="unknown_adjustment")
    if a.state != "pending":
        raise Refusal(f"this adjustment is {a.state} already", code="not_pending")
    if a.requested_by == actor.name:
        raise Refusal("someone else approves what you asked for", code="own_request")
    member = _locked_member(session, a.member_id)
    before = member.balance
    if approve:
        _check(member, a.points, Reason(a.reason))
        a.state = "applied"
    else:
        a.state = "rejected"
    a.decided_by, a.decided_at = actor.name, now
    session.flush()
    if approve:
        _apply(session, a, member, now)
    record(
        session,
        actor,
        "member.adjust.approve" if approve else "member.adjust.reject",
        member.id,
        now,
        before={"balance": before, "state": "pending"},
        after={"balance": member.balance, "state": a.state, "points": a.points},
        store_id=member.store_id,
    )
    return _adjustment(a)


def block_card(
    session: Session, card_no: str, reason: str, actor: Actor, now: datetime
) -> tuple[str, str]:
    """Mark a card blocked at HQ (the caller publishes the blocklist update); returns the
    card's number and its member.

    Raises:
        NotFound: no such card. Refusal: not active. InvalidInput: no reason.
    """
    why = clean_note(reason)
    if not why:
        raise InvalidInput("say why the card is blocked", code="bad_note")
    card = session.scalar(
        select(CentralCard).where(CentralCard.card_no == card_no.strip()).with_for_update()
    )
    if card is None:
        raise NotFound(f"no card {card_no.strip()[:24]} at HQ", code="unknown_card")
    if card.state != CardState.ACTIVE:
        raise Refusal(f"this card is {card.state} already", code="card_not_active")
    session.execute(
        update(CentralCard)
        .where(CentralCard.card_no == card.card_no)
        .values(state=CardState.BLOCKED.value)
    )
    record(
        session,
        actor,
        "card.block",
        card.card_no,
        now,
        before={"state": card.state},
        after={"state": CardState.BLOCKED.value, "reason": why},
        store_id=card.store_id,
    )
    return card.card_no, card.member_id
