"""What the member page shows a signed-in member, from HQ's own records: balance, tier and
what the next tier needs, points that expire soon, recent history, coupons, gift vouchers not
yet collected, and their consent to messages.

HQ keeps every store's ledger entries with each credit's lot dates, so the lots and what
expires when are worked out as a kiosk does from the same entries (:func:`open_lots`). The tier
ladder is the one HQ's rules in force publish (else the kiosks' default ladder); the tier's
measure is spend (or points earned) over the rolling period, counted from the stored events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from edge.domain.cards import CardState
from edge.domain.errors import NotFound
from edge.domain.points import EntryKind, ExpiringPoints, Lot, expiring_soon
from edge.domain.tiers import (
    DEFAULT_BASIS,
    DEFAULT_LADDER,
    DEFAULT_PERIOD_MONTHS,
    Tier,
    find_tier,
    months_after,
    next_tier,
)
from edge.protocol import LedgerEntryData
from edge.protocol.messages import Rules
from edge.security.personal import TextVault
from hq.coupons import sign_coupon, usable_coupons
from hq.feeds import snapshot
from hq.models import (
    Campaign,
    CampaignCoupon,
    CentralCard,
    CentralEntry,
    CentralMember,
    DeviceCoupon,
    DocumentVersion,
    GiftVoucher,
    StoredEvent,
    VoucherCollection,
)

EXPIRING_WITHIN = timedelta(days=30)
HISTORY = 20
# The stores' timezone (the kiosks' device.timezone): the days members read are theirs.
TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class HistoryLine:
    at: datetime
    kind: str
    points: int
    store_id: str


@dataclass(frozen=True)
class CouponLine:
    """A coupon in the wallet: ``code`` is what the lane (or a kiosk) takes; None when HQ has
    no key to sign it with here (the kiosk prints it)."""

    coupon_id: str
    title: str
    kind: str
    value_cents: int
    threshold_cents: int
    percent: int
    valid_from: datetime
    valid_until: datetime
    code: str | None


@dataclass(frozen=True)
class PrintedCoupon:
    """A coupon a kiosk printed for points: its paper carries the code."""

    coupon_id: str
    value_cents: int
    expires_at: datetime


@dataclass(frozen=True)
class VoucherLine:
    voucher_id: str
    name: str
    qty: int
    store_id: str
    valid_until: date | None


@dataclass(frozen=True)
class NextTierLine:
    tier: Tier
    missing: int  # cents of spend or points, per ``basis``
    basis: str


@dataclass(frozen=True)
class MemberAccount:
    member_id: str
    phone_masked: str
    tier: Tier
    next: NextTierLine | None
    balance: int
    expiring: tuple[ExpiringPoints, ...]
    history: tuple[HistoryLine, ...]
    card_no: str | None  # the active card, whose member code the page shows
    card_blocked: bool  # has cards, none active
    coupons: tuple[CouponLine, ...]
    printed_coupons: tuple[PrintedCoupon, ...]
    vouchers: tuple[VoucherLine, ...]
    message_consent: str | None
    consent_at: datetime | None


@dataclass
class _OpenLot:
    remaining: int
    available_at: datetime
    expires_at: datetime
    earned_at: datetime


def open_lots(entries: Iterable[LedgerEntryData]) -> list[Lot]:
    """The member's lots with what remains of each, from their ledger entries.

    A credit opens its lot; a debit naming a lot takes from it; a debit naming none (or more
    than its lot holds) takes from the lots expiring first, as redemption does.
    """
    lots: dict[str, _OpenLot] = {}
    for e in sorted(entries, key=lambda e: (e.at, -e.points, e.id)):
        if e.points > 0:
            if e.lot_id is not None and e.expires_at is not None and e.lot_id not in lots:
                lots[e.lot_id] = _OpenLot(e.points, e.available_at or e.at, e.expires_at, e.at)
            continue
        take = -e.points
        own = lots.get(e.lot_id) if e.lot_id is not None else None
        if own is not None:
            used = min(take, own.remaining)
            own.remaining -= used
            take -= used
        for lot in sorted(lots.values(), key=lambda v: (v.expires_at, v.earned_at)):
            if take <= 0:
                break
            used = min(take, lot.remaining)
            lot.remaining -= used
            take -= used
    return [
        Lot(lot_id, v.remaining, v.available_at, v.expires_at, v.earned_at)
        for lot_id, v in lots.items()
        if v.remaining > 0
    ]


def ladder(session: Session, now: datetime) -> list[Tier]:
    """The tier ladder in force: HQ's newest rules in force that carry one, else the kiosks'
    default ladder."""
    for row in session.scalars(
        select(DocumentVersion)
        .where(DocumentVersion.kind == "rules")
        .order_by(DocumentVersion.version.desc())
        .limit(20)
    ):
        rules = Rules.model_validate_json(row.document)
        if rules.in_force_at(now):
            if rules.tiers is None:
                break
            return [
                Tier(t.code, t.name_zh, t.name_en, t.threshold, t.multiplier_pct)
                for t in rules.tiers
            ]
    return list(DEFAULT_LADDER)


def tier_measure(session: Session, member_id: str, now: datetime, basis: str, months: int) -> int:
    """Spend in cents (less refunds of those receipts), or points earned, over the rolling
    period ending ``now``, as a kiosk counts it."""
    since = months_after(now, -months)
    if basis == "points":
        rows = session.scalars(
            select(CentralEntry.points).where(
                CentralEntry.member_id == member_id,
                CentralEntry.kind.in_(EntryKind.EARNING | {EntryKind.REFUND}),
                CentralEntry.at > since,
            )
        )
        return sum(rows)
    events = session.execute(
        select(StoredEvent.kind, StoredEvent.payload)
        .join(CentralEntry, CentralEntry.event_id == StoredEvent.event_id)
        .where(
            CentralEntry.member_id == member_id,
            CentralEntry.kind.in_((EntryKind.PURCHASE, EntryKind.REFUND)),
            CentralEntry.at > since,
        )
        .distinct()
    ).all()
    spent: dict[str, int] = {}
    refunded: list[tuple[str, int]] = []
    for kind, payload in events:
        data = json.loads(payload).get("data", {})
        receipt, amount = data.get("receipt_id"), data.get("amount_cents")
        if not isinstance(receipt, str) or not isinstance(amount, int):
            continue
        if kind == "points.accrued":
            spent[receipt] = amount
        else:
            refunded.append((receipt, amount))
    return sum(spent.values()) - sum(a for r, a in refunded if r in spent)


def account(
    session: Session,
    vault: TextVault,
    member_id: str,
    now: datetime,
    coupon_key: Ed25519PrivateKey | None,
) -> MemberAccount:
    """What the member page shows the member ``member_id`` (``vault``: HQ's data key, which
    the member's snapshot needs; ``coupon_key``: what signs their coupons' codes).

    Raises:
        NotFound: ``unknown_member``.
    """
    member = session.get(CentralMember, member_id)
    if member is None or member.deleted:
        raise NotFound("this membership is no longer here", code="unknown_member")
    tiers = ladder(session, now)
    tier = find_tier(member.tier, tiers)
    measure = tier_measure(session, member.id, now, DEFAULT_BASIS, DEFAULT_PERIOD_MONTHS)
    coming = next_tier(tier.code, measure, tiers)
    snap = snapshot(session, vault, member.id)
    entries = list(snap.entries) if snap is not None else []
    lots = open_lots(entries)
    expiring = tuple(
        e for e in expiring_soon(lots, now, 10, TZ) if e.expires_at <= now + EXPIRING_WITHIN
    )
    history = tuple(
        HistoryLine(r.at, r.kind, r.points, r.store_id)
        for r in session.execute(
            select(CentralEntry)
            .where(CentralEntry.member_id == member.id)
            .order_by(CentralEntry.at.desc(), CentralEntry.id.desc())
            .limit(HISTORY)
        ).scalars()
    )
    card_no, has_cards = active_card(session, member.id)
    return MemberAccount(
        member_id=member.id,
        phone_masked=member.phone_masked,
        tier=tier,
        next=NextTierLine(coming.tier, coming.missing, DEFAULT_BASIS) if coming else None,
        balance=member.balance,
        expiring=expiring,
        history=history,
        card_no=card_no,
        card_blocked=card_no is None and has_cards,
        coupons=_coupons(session, member.id, now, coupon_key),
        printed_coupons=_printed(session, member.id, now),
        vouchers=_vouchers(session, member.id, now),
        message_consent=member.message_consent_version,
        consent_at=member.message_consent_at,
    )


def active_card(session: Session, member_id: str) -> tuple[str | None, bool]:
    """The member's active card (the newest, should there be two) and whether they have any
    card at all."""
    cards = session.execute(
        select(CentralCard.card_no, CentralCard.state)
        .where(CentralCard.member_id == member_id)
        .order_by(CentralCard.card_no.desc())
    ).all()
    active = next((no for no, state in cards if state == CardState.ACTIVE.value), None)
    return active, bool(cards)


def _coupons(
    session: Session, member_id: str, now: datetime, key: Ed25519PrivateKey | None
) -> tuple[CouponLine, ...]:
    rows = session.execute(
        usable_coupons(member_id, now)
        .order_by(Campaign.valid_until, CampaignCoupon.coupon_id)
        .limit(50)
    ).tuples()
    return tuple(
        CouponLine(
            c.coupon_id,
            k.title,
            k.kind,
            k.value_cents,
            k.threshold_cents,
            k.percent,
            k.valid_from,
            k.valid_until,
            sign_coupon(key, c.coupon_id) if key is not None else None,
        )
        for c, k in rows
    )


def _printed(session: Session, member_id: str, now: datetime) -> tuple[PrintedCoupon, ...]:
    return tuple(
        PrintedCoupon(c.coupon_id, c.value_cents, c.expires_at)
        for c in session.scalars(
            select(DeviceCoupon)
            .where(
                DeviceCoupon.member_id == member_id,
                DeviceCoupon.used_at.is_(None),
                DeviceCoupon.expires_at > now,
            )
            .order_by(DeviceCoupon.expires_at)
            .limit(50)
        )
    )


def _vouchers(session: Session, member_id: str, now: datetime) -> tuple[VoucherLine, ...]:
    today = now.astimezone(TZ).date()
    rows = session.scalars(
        select(GiftVoucher)
        .outerjoin(
            VoucherCollection,
            and_(
                VoucherCollection.issuer_device_id == GiftVoucher.issuer_device_id,
                VoucherCollection.voucher_id == GiftVoucher.voucher_id,
            ),
        )
        .where(GiftVoucher.member_id == member_id, VoucherCollection.voucher_id.is_(None))
        .order_by(GiftVoucher.at.desc())
        .limit(50)
    )
    return tuple(
        VoucherLine(v.voucher_id, v.name or v.sku, v.qty, v.store_id, v.valid_until)
        for v in rows
        if v.valid_until is None or v.valid_until >= today
    )


__all__ = ["MemberAccount", "account", "active_card", "ladder", "open_lots", "tier_measure"]
