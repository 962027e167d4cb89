"""Gift and coupon redemption rules: stock never oversold, per-member limits, low-stock alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge.domain.errors import InvalidInput, Refusal
from edge.domain.points import local_date

MAX_QTY = 20
# How long a gift voucher printed before its validity was kept with it stays good: what those
# vouchers say on paper.
DEFAULT_VOUCHER_VALID_DAYS = 30


@dataclass(frozen=True)
class GiftTerms:
    sku: str
    name: str
    points_price: int
    stock: int
    low_stock: int
    per_member_limit: int | None
    active: bool


def validate_sku(sku: str) -> str:
    sku = sku.strip()
    if not sku or len(sku) > 32 or not all(c.isalnum() or c in "-_." for c in sku):
        raise InvalidInput(f"'{sku}' is not a valid SKU (letters, digits, - _ .)", code="bad_sku")
    return sku


def check_redemption(gift: GiftTerms, qty: int, already_redeemed: int) -> int:
    """Checks a redemption of ``qty`` of ``gift``; returns the points it costs.

    ``already_redeemed`` is how many of this gift the member redeemed before.
    """
    if not 1 <= qty <= MAX_QTY:
        raise InvalidInput(f"quantity must be between 1 and {MAX_QTY}", code="bad_qty")
    if not gift.active:
        raise Refusal(f"{gift.name} is no longer offered", code="gift_inactive", sku=gift.sku)
    if gift.stock <= 0:
        raise Refusal(f"{gift.name} is out of stock", code="out_of_stock", sku=gift.sku, stock=0)
    if gift.stock < qty:
        raise Refusal(
            f"only {gift.stock} of {gift.name} left",
            code="out_of_stock",
            sku=gift.sku,
            stock=gift.stock,
        )
    if gift.per_member_limit is not None and already_redeemed + qty > gift.per_member_limit:
        raise Refusal(
            f"{gift.name} is limited to {gift.per_member_limit} per member"
            f" ({already_redeemed} already redeemed)",
            code="limit_reached",
            sku=gift.sku,
            limit=gift.per_member_limit,
            redeemed=already_redeemed,
        )
    return gift.points_price * qty


def is_low_stock(stock_after: int, low_stock: int) -> bool:
    return stock_after <= low_stock


def voucher_valid_until(redeemed_at: datetime, tz: ZoneInfo, valid_days: int) -> date:
    """The last day (store-local) a gift voucher can be collected: the date printed on it."""
    return local_date(redeemed_at, tz) + timedelta(days=valid_days)


def check_voucher_collectable(
    valid_until: date, collected_before: datetime | None, now: datetime, tz: ZoneInfo
) -> None:
    """Refuses a gift voucher that was collected already (a reprint carries the same code, so
    it is refused too) or whose printed date has passed.

    Raises:
        Refusal: ``voucher_collected`` or ``voucher_expired``.
    """
    if collected_before is not None:
        when = collected_before.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        raise Refusal(
            f"this voucher was already collected on {when}",
            code="voucher_collected",
            collected_at=collected_before.isoformat(),
        )
    if local_date(now, tz) > valid_until:
        raise Refusal(
            f"this voucher expired on {valid_until.isoformat()}",
            code="voucher_expired",
            valid_until=valid_until.isoformat(),
        )
