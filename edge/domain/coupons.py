"""Coupons of HQ's campaigns: what a campaign's terms may say, when a coupon of it can be
used, and what it takes off a basket. Amounts are integer cents throughout.

A campaign (活动) is a coupon template: what the coupon gives (an amount off, an amount off a
basket above a threshold (满减), a percentage off, or a gift), when it can be used, who gets
it, and how many there are. HQ issues its coupons into members' wallets; each coupon's id
names its campaign (``<campaign>.<id>``) and HQ signs it, so a kiosk of any store reads the
campaign from a coupon it has never seen and can check it offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edge.domain.errors import InvalidInput, Refusal

HQ_ISSUER = "HQ"  # the issuer named in HQ's coupons (devices' ids are never this)
CAMPAIGN_ID = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,23}$")
MAX_TITLE = 64
MAX_COUPON_CENTS = 10_000_000
MAX_THRESHOLD_CENTS = 100_000_000
MAX_PERCENT_OFF = 90
MAX_POOL = 10_000_000
MAX_PER_MEMBER = 100


class CouponKind(StrEnum):
    AMOUNT_OFF = "amount_off"  # 代金券: value_cents off
    THRESHOLD_OFF = "threshold_off"  # 满减: value_cents off a basket of threshold_cents or more
    PERCENT_OFF = "percent_off"  # 折扣券: percent off
    GIFT = "gift"  # 赠品券: the gift gift_sku


class Audience(StrEnum):
    """Who a campaign's coupons go to."""

    ALL = "all"  # every member
    TIER = "tier"  # members of one tier
    BIRTHDAY_MONTH = "birthday_month"  # members whose birthday is in the month it is issued
    NEW_MEMBERS = "new_members"  # each member registered while it runs, when registered
    REFERRED = "referred"  # a member registered with a referrer, when registered
    REFERRER = "referrer"  # the member who referred them, at that moment


AT_REGISTRATION = frozenset({Audience.NEW_MEMBERS, Audience.REFERRED, Audience.REFERRER})


@dataclass(frozen=True)
class Terms:
    """What a campaign's coupons give and when they can be used (``[valid_from,
    valid_until)``, UTC); ``finished`` when HQ ended the campaign before its time."""

    campaign_id: str
    title: str
    kind: CouponKind
    value_cents: int
    threshold_cents: int
    percent: int
    gift_sku: str
    valid_from: datetime
    valid_until: datetime
    finished: bool = False


def check_campaign_id(text: str) -> str:
    value = text.strip().upper()
    if not CAMPAIGN_ID.fullmatch(value):
        raise InvalidInput(
            f"bad campaign id {text[:40]!r}: 1-24 letters, digits, '-' or '_', starting with a "
            "letter or digit",
            code="bad_campaign",
        )
    return value


def check_terms(terms: Terms) -> Terms:
    """``terms`` when they make sense for their kind.

    Raises:
        InvalidInput: ``bad_campaign`` with what is wrong, in one line.
    """

    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"campaign {terms.campaign_id}: {why}", code="bad_campaign")

    check_campaign_id(terms.campaign_id)
    if not terms.title.strip() or len(terms.title) > MAX_TITLE:
        raise bad(f"the title must be 1-{MAX_TITLE} characters")
    if terms.valid_until <= terms.valid_from:
        raise bad("it must end after it starts")
    kind = terms.kind
    if kind in (CouponKind.AMOUNT_OFF, CouponKind.THRESHOLD_OFF) and not (
        0 < terms.value_cents <= MAX_COUPON_CENTS
    ):
        raise bad(f"the amount off must be 1-{MAX_COUPON_CENTS} cents")
    if kind == CouponKind.THRESHOLD_OFF and not (
        terms.value_cents < terms.threshold_cents <= MAX_THRESHOLD_CENTS
    ):
        raise bad("the threshold must be more than the amount off")
    if kind == CouponKind.PERCENT_OFF and not 0 < terms.percent <= MAX_PERCENT_OFF:
        raise bad(f"the percentage off must be 1-{MAX_PERCENT_OFF}")
    if kind == CouponKind.GIFT and not terms.gift_sku.strip():
        raise bad("a gift coupon names its gift's SKU")
    unused = {
        "value_cents": terms.value_cents
        if kind not in (CouponKind.AMOUNT_OFF, CouponKind.THRESHOLD_OFF)
        else 0,
        "threshold_cents": terms.threshold_cents if kind != CouponKind.THRESHOLD_OFF else 0,
        "percent": terms.percent if kind != CouponKind.PERCENT_OFF else 0,
        "gift_sku": len(terms.gift_sku) if kind != CouponKind.GIFT else 0,
    }
    extra = [name for name, value in unused.items() if value]
    if extra:
        raise bad(f"a {kind.value} coupon takes no {', '.join(extra)}")
    return terms


def coupon_id(campaign_id: str, unique: str) -> str:
    """A coupon's id: its campaign, a dot, an id unique in it."""
    return f"{campaign_id}.{unique}"


def campaign_of(coupon: str) -> str | None:
    """The campaign a coupon id names, or None when it names none."""
    head, sep, tail = coupon.partition(".")
    return head if sep and tail and CAMPAIGN_ID.fullmatch(head) else None


def usable(terms: Terms, now: datetime) -> None:
    """Nothing when a coupon of ``terms`` can be used at ``now``.

    Raises:
        Refusal: ``coupon_campaign_finished``, ``coupon_not_yet_valid`` or ``coupon_expired``.
    """
    if terms.finished:
        raise Refusal(
            f"campaign {terms.campaign_id} has finished; its coupons are no longer valid",
            code="coupon_campaign_finished",
        )
    if now < terms.valid_from:
        raise Refusal(
            f"this coupon is valid from {terms.valid_from.isoformat()}",
            code="coupon_not_yet_valid",
        )
    if now >= terms.valid_until:
        raise Refusal(
            f"this coupon expired at {terms.valid_until.isoformat()}", code="coupon_expired"
        )


def discount_cents(terms: Terms, basket_cents: int) -> int:
    """What a coupon of ``terms`` takes off a basket of ``basket_cents`` (:func:`takes_off`)."""
    return takes_off(
        terms.kind, terms.value_cents, terms.threshold_cents, terms.percent, basket_cents
    )


def takes_off(
    kind: str, value_cents: int, threshold_cents: int, percent: int, basket_cents: int
) -> int:
    """What a coupon of ``kind`` takes off a basket of ``basket_cents``, as a till works it
    out (never more than the basket; a gift coupon takes nothing off, it gives the gift).

    Raises:
        InvalidInput: a negative basket, or a kind no coupon has.
        Refusal: ``coupon_below_threshold`` for a 满减 coupon on a basket under its threshold.
    """
    if basket_cents < 0:
        raise InvalidInput("a basket cannot be negative", code="bad_amount")
    if kind == CouponKind.AMOUNT_OFF:
        return min(value_cents, basket_cents)
    if kind == CouponKind.THRESHOLD_OFF:
        if basket_cents < threshold_cents:
            raise Refusal(
                f"this coupon needs a basket of {threshold_cents / 100:.2f} or more",
                code="coupon_below_threshold",
            )
        return min(value_cents, basket_cents)
    if kind == CouponKind.PERCENT_OFF:
        return basket_cents * percent // 100
    if kind == CouponKind.GIFT:
        return 0
    raise InvalidInput(f"no coupon is of the kind {kind!r}", code="bad_kind")
