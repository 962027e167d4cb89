"""Points use cases: accrue a purchase, daily check-in, birthday bonus, expire old lots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.errors import InvalidInput, Refusal
from edge.domain.members import is_birthday_month
from edge.domain.points import (
    EntryKind,
    local_date,
    member_day_multiplier,
    purchase_points,
    reference_id,
)
from edge.domain.tiers import find_tier
from edge.services.ledger import EntryRecord, credit, expire_lot
from edge.services.members import usable_member
from edge.services.personal import birthday_of
from edge.services.remote import ensure_here
from edge.services.tiers import upgrade_if_earned
from edge.services.tx import Tx, transaction
from edge.storage.models import BonusClaim, LedgerEntry, Member, PointsLot, Purchase


@dataclass(frozen=True)
class Accrual:
    receipt_id: str
    card_no: str
    amount_cents: int
    points: int
    balance: int
    tier: str
    upgraded_to: str | None
    duplicate: bool


def accrue_purchase(
    app: AppContext, card_no: str, amount_cents: int, receipt_id: str, actor: str = "lane"
) -> Accrual:
    """Credits a purchase; the receipt id is the idempotency key, so a resent receipt is harmless.

    Points = yuan x base rate x tier multiplier x member-day multiplier, rounded down, held for
    the return window before they can be spent. A purchase that lifts the rolling spend over a
    threshold upgrades the tier at once.
    """
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise InvalidInput("amount must be whole cents", code="bad_amount")
    rid = reference_id(receipt_id)
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        seen = tx.session.get(Purchase, rid)
        if seen is not None:
            if seen.card_no != card_no.strip() or seen.amount_cents != amount_cents:
                raise Refusal(
                    f"receipt {rid} was already credited with different details",
                    code="receipt_conflict",
                )
            member = tx.session.get(Member, seen.member_id)
            assert member is not None
            return Accrual(
                rid,
                seen.card_no,
                seen.amount_cents,
                seen.points,
                member.balance,
                member.tier,
                None,
                True,
            )
        member, card = usable_member(tx, card_no)
        tier = find_tier(member.tier, app.ladder)
        day_pct = member_day_multiplier(app.member_days, local_date(tx.now, app.tz))
        points = purchase_points(
            amount_cents, app.config.points.points_per_yuan, tier.multiplier_pct, day_pct
        )
        tx.session.add(
            Purchase(
                receipt_id=rid,
                member_id=member.id,
                card_no=card.card_no,
                amount_cents=amount_cents,
                points=points,
                at=tx.now,
                store_id=app.store_id,
            )
        )
        entries: list[EntryRecord] = []
        if points > 0:
            entries.append(
                credit(tx, member, points, EntryKind.PURCHASE, rid, app.config.points.pending_days)
            )
        tx.session.flush()
        upgraded = upgrade_if_earned(tx, member)
        tx.audit(
            actor,
            "points.accrue",
            member.id,
            receipt_id=rid,
            amount_cents=amount_cents,
            points=points,
            member_day_pct=day_pct,
        )
        tx.emit(
            "points.accrued",
            {
                "member_id": member.id,
                "card_no": card.card_no,
                "receipt_id": rid,
                "amount_cents": amount_cents,
                "entries": [e.as_dict() for e in entries],
            },
        )
        return Accrual(
            rid, card.card_no, amount_cents, points, member.balance, member.tier, upgraded, False
        )


@dataclass(frozen=True)
class Bonus:
    card_no: str
    kind: str
    points: int
    balance: int


def _claim_once(tx: Tx, member: Member, kind: str, period: str, refusal: Refusal) -> None:
    exists = tx.session.scalar(
        select(BonusClaim.id).where(
            BonusClaim.member_id == member.id, BonusClaim.kind == kind, BonusClaim.period == period
        )
    )
    if exists is not None:
        raise refusal
    tx.session.add(
        BonusClaim(id=tx.new_id(), member_id=member.id, kind=kind, period=period, at=tx.now)
    )


def _bonus(tx: Tx, member: Member, card_no: str, kind: str, points: int, ref: str) -> Bonus:
    entries = [credit(tx, member, points, kind, ref)] if points > 0 else []
    tx.audit("member", f"points.{kind}", member.id, points=points)
    tx.emit(
        f"points.{kind}",
        {"member_id": member.id, "card_no": card_no, "entries": [e.as_dict() for e in entries]},
    )
    return Bonus(card_no, kind, points, member.balance)


def check_in(app: AppContext, card_no: str) -> Bonus:
    ensure_here(app, card_no=card_no)
    """Daily check-in: once per store-local day."""
    with transaction(app) as tx:
        member, card = usable_member(tx, card_no)
        today = local_date(tx.now, app.tz)
        _claim_once(
            tx,
            member,
            "checkin",
            today.isoformat(),
            Refusal("already checked in today; come back tomorrow", code="already_checked_in"),
        )
        return _bonus(
            tx,
            member,
            card.card_no,
            EntryKind.CHECKIN,
            app.config.points.checkin_points,
            f"checkin:{today.isoformat()}",
        )


def claim_birthday_bonus(app: AppContext, card_no: str) -> Bonus:
    ensure_here(app, card_no=card_no)
    """The birthday gift of points: in the birthday month, once a year."""
    with transaction(app) as tx:
        member, card = usable_member(tx, card_no)
        today = local_date(tx.now, app.tz)
        birthday = birthday_of(app, member)
        if birthday is None:
            raise Refusal("no birthday on file for this member", code="no_birthday")
        if not is_birthday_month(birthday, today):
            raise Refusal(
                "the birthday gift can be claimed in the birthday month", code="not_birthday_month"
            )
        _claim_once(
            tx,
            member,
            "birthday",
            str(today.year),
            Refusal("this year's birthday gift was already claimed", code="birthday_claimed"),
        )
        return _bonus(
            tx,
            member,
            card.card_no,
            EntryKind.BIRTHDAY,
            app.config.points.birthday_bonus_points,
            f"birthday:{today.year}",
        )


@dataclass(frozen=True)
class ExpiryRun:
    lots: int
    points: int
    members: int
    now: datetime


def expire_points(app: AppContext, now: datetime | None = None, batch: int = 500) -> ExpiryRun:
    """Writes off every lot past its expiry, in batches so the kiosk never waits long.

    Running it twice, or after a crash midway, is harmless: an expired lot has nothing left.
    """
    lots_done = points_done = 0
    members: set[str] = set()
    while True:
        with transaction(app) as tx:
            at = now or tx.now
            # Only lots this device credited: other stores' lots reach the replica through HQ
            # and are expired by the store that issued them, so no lot is expired twice.
            own_lots = select(LedgerEntry.lot_id).where(
                LedgerEntry.points > 0, LedgerEntry.device_id == app.device_id
            )
            due = list(
                tx.session.scalars(
                    select(PointsLot)
                    .where(
                        PointsLot.expires_at <= at,
                        PointsLot.remaining > 0,
                        PointsLot.id.in_(own_lots),
                    )
                    .order_by(PointsLot.expires_at, PointsLot.id)
                    .limit(batch)
                )
            )
            by_member: dict[str, list[EntryRecord]] = {}
            for lot in due:
                member = tx.session.get(Member, lot.member_id)
                assert member is not None
                points_done += lot.remaining
                by_member.setdefault(member.id, []).append(expire_lot(tx, member, lot, at))
            for member_id, entries in by_member.items():
                tx.emit(
                    "points.expired",
                    {"member_id": member_id, "entries": [e.as_dict() for e in entries]},
                )
            if due:
                tx.audit(
                    "system",
                    "points.expire",
                    "",
                    lots=len(due),
                    points=sum(-e.points for es in by_member.values() for e in es),
                )
            lots_done += len(due)
            members.update(by_member)
        if len(due) < batch:
            return ExpiryRun(lots_done, points_done, len(members), now or app.clock())
