"""Points rules: what a purchase earns, when a lot expires, which lots a redemption consumes.

All amounts are integers: points, and money in cents (fen). Rounding is always down, so the
member center never gives away a fraction of a point it cannot account for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from edge.domain.errors import InvalidInput, Refusal

MAX_PURCHASE_CENTS = 100_000_000  # one million yuan: anything larger is a typo or an attack


class EntryKind:
    """Kinds of ledger entries."""

    PURCHASE = "purchase"
    CHECKIN = "checkin"
    BIRTHDAY = "birthday"
    REFERRAL = "referral"
    REDEMPTION = "redemption"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"
    REFUND = "refund"  # points a receipt earned, taken back when its money is returned
    VOUCHER_RETURN = "voucher_return"  # a gift voucher's points, back when it lapsed uncollected

    EARNING = frozenset({PURCHASE, CHECKIN, BIRTHDAY, REFERRAL})


@dataclass(frozen=True)
class Lot:
    """An open lot as the rules see it."""

    id: str
    remaining: int
    available_at: datetime
    expires_at: datetime
    earned_at: datetime


@dataclass(frozen=True)
class MemberDayRule:
    day_of_month: int | None
    weekday: int | None
    multiplier_pct: int

    def applies(self, day: date) -> bool:
        if self.day_of_month is not None:
            return day.day == self.day_of_month
        return day.weekday() == self.weekday


def reference_id(text: str, what: str = "receipt id") -> str:
    """A lane's own id (a receipt, a refund): 1-64 printable characters, the idempotency key
    of what it names. The code says which (``bad_receipt_id``, ``bad_refund_id``)."""
    value = text.strip()
    if not 1 <= len(value) <= 64 or not value.isprintable():
        code = "bad_" + what.replace(" ", "_")
        raise InvalidInput(f"a {what} is 1-64 printable characters", code=code)
    return value


def purchase_points(
    amount_cents: int, points_per_yuan: int, tier_multiplier_pct: int, member_day_pct: int = 100
) -> int:
    """Points for a purchase: yuan x base rate x tier and member-day multipliers, floored."""
    if amount_cents <= 0:
        raise InvalidInput("a purchase amount must be positive", code="bad_amount")
    if amount_cents > MAX_PURCHASE_CENTS:
        raise InvalidInput("purchase amount is implausibly large", code="bad_amount")
    return (amount_cents * points_per_yuan * tier_multiplier_pct * member_day_pct) // (
        100 * 100 * 100
    )


def member_day_multiplier(rules: Iterable[MemberDayRule], day: date) -> int:
    """The highest member-day multiplier that applies on ``day`` (100 when none does)."""
    return max((r.multiplier_pct for r in rules if r.applies(day)), default=100)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def add_months(day: date, months: int) -> date:
    """The first day of the month ``months`` after ``day``'s month."""
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def lot_expiry(earned_at: datetime, expiry_months: int, tz: ZoneInfo) -> datetime:
    """Points earned in month M expire at the end of month M + ``expiry_months`` (store time).

    With 12, points earned on 15 March 2026 expire at the end of March 2027: a member always
    keeps points for at least a full year, and expiry dates fall on few, memorable days.
    """
    first_after = add_months(local_date(earned_at, tz), expiry_months + 1)
    return datetime.combine(first_after, time(0, 0), tz).astimezone(earned_at.tzinfo)


def available_from(earned_at: datetime, pending_days: int) -> datetime:
    """When held points (the return window) become spendable."""
    return earned_at + timedelta(days=pending_days)


def spendable(lots: Iterable[Lot], now: datetime) -> int:
    return sum(lot.remaining for lot in lots if lot.available_at <= now < lot.expires_at)


def pending(lots: Iterable[Lot], now: datetime) -> int:
    return sum(lot.remaining for lot in lots if lot.available_at > now and now < lot.expires_at)


def plan_consumption(lots: Sequence[Lot], points: int, now: datetime) -> list[tuple[str, int]]:
    """Which lots pay for ``points``: spendable lots, the soonest to expire first.

    Returns (lot id, points taken) pairs; refuses when the spendable total is short, telling
    the member how much they have, so the kiosk can explain instead of failing.
    """
    if points <= 0:
        raise InvalidInput("points to redeem must be positive", code="bad_points")
    usable = sorted(
        (lot for lot in lots if lot.remaining > 0 and lot.available_at <= now < lot.expires_at),
        key=lambda lot: (lot.expires_at, lot.earned_at, lot.id),
    )
    have = sum(lot.remaining for lot in usable)
    if have < points:
        held = pending(lots, now)
        raise Refusal(
            f"not enough points: {points} needed, {have} available"
            + (f" ({held} more become available after the return window)" if held else ""),
            code="insufficient_points",
            needed=points,
            available=have,
            pending=held,
        )
    plan: list[tuple[str, int]] = []
    left = points
    for lot in usable:
        take = min(lot.remaining, left)
        plan.append((lot.id, take))
        left -= take
        if left == 0:
            break
    return plan


@dataclass(frozen=True)
class ExpiringPoints:
    """'``points`` expire on ``expires_on``': the moment they lapse and the last day (in the
    store's timezone) they can still be spent."""

    points: int
    expires_at: datetime
    expires_on: date


def last_day(expires_at: datetime, tz: tzinfo) -> date:
    """The last store-local day before ``expires_at``: points lapsing at midnight starting
    1 April are said to expire on 31 March."""
    return (expires_at - timedelta(seconds=1)).astimezone(tz).date()


def expiring_soon(
    lots: Iterable[Lot], now: datetime, limit: int = 3, tz: tzinfo = UTC
) -> list[ExpiringPoints]:
    """'N points expire on D', grouped by expiry moment, soonest first; D in ``tz``."""
    by_when: dict[datetime, int] = {}
    for lot in lots:
        if lot.remaining > 0 and lot.expires_at > now:
            by_when[lot.expires_at] = by_when.get(lot.expires_at, 0) + lot.remaining
    return [
        ExpiringPoints(p, when, last_day(when, tz)) for when, p in sorted(by_when.items())[:limit]
    ]
