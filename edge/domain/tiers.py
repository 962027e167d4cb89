"""Tier ladder: upgrade at once when a threshold is reached, downgrade only at period end."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final


@dataclass(frozen=True)
class Tier:
    code: str
    name_zh: str
    name_en: str
    threshold: int
    multiplier_pct: int
    member_price_pct: int = 0  # percent off at the lanes


DEFAULT_LADDER = (
    Tier("normal", "普通会员", "Member", 0, 100),
    Tier("silver", "银卡会员", "Silver", 200_000, 120),
    Tier("gold", "金卡会员", "Gold", 800_000, 150),
    Tier("diamond", "钻石会员", "Diamond", 2_000_000, 200),
)
"""The ladder a kiosk uses when neither its configuration nor HQ's rules give one."""
DEFAULT_BASIS: Final = "spend"  # what thresholds measure: cents of spend (or "points" earned)
DEFAULT_PERIOD_MONTHS: Final = 12  # ... over this rolling period


def months_after(moment: datetime, months: int) -> datetime:
    """The same moment ``months`` later (or earlier when negative), the day clamped."""
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def tier_for(measure: int, ladder: Sequence[Tier]) -> Tier:
    """The highest tier whose threshold ``measure`` reaches (the ladder is sorted, lowest first)."""
    reached = ladder[0]
    for tier in ladder:
        if measure >= tier.threshold:
            reached = tier
    return reached


def find_tier(code: str, ladder: Sequence[Tier]) -> Tier:
    for tier in ladder:
        if tier.code == code:
            return tier
    # A tier removed from the configuration: treat the member as the base tier.
    return ladder[0]


def rank(code: str, ladder: Sequence[Tier]) -> int:
    for i, tier in enumerate(ladder):
        if tier.code == code:
            return i
    return 0


def upgrade_to(current: str, measure: int, ladder: Sequence[Tier]) -> Tier | None:
    """The tier to move up to now, or None when the measure doesn't reach a higher one."""
    reached = tier_for(measure, ladder)
    return reached if rank(reached.code, ladder) > rank(current, ladder) else None


def review_at_period_end(measure: int, ladder: Sequence[Tier]) -> Tier:
    """At the end of a tier period the member holds exactly the tier the period earned."""
    return tier_for(measure, ladder)


@dataclass(frozen=True)
class NextTier:
    tier: Tier
    missing: int


def next_tier(current: str, measure: int, ladder: Sequence[Tier]) -> NextTier | None:
    """What the member still needs (in the ladder's unit) for the next tier; None at the top."""
    idx = rank(current, ladder)
    if idx + 1 >= len(ladder):
        return None
    target = ladder[idx + 1]
    return NextTier(target, max(0, target.threshold - measure))
