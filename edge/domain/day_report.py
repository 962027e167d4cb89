"""The day's figures the member desk prints: what happened at this kiosk on one business day.

They are counted from the audit log, where every use case leaves a record, so the report keeps
no counters of its own and always agrees with the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

REGISTERED = "member.register"
LOOKED_UP = "member.lookup"
REDEEMED = "gift.redeem"
CARD_REPLACED = "card.replace"


@dataclass(frozen=True)
class DayFigures:
    """One store-local day: counts of what members and staff did, and the gifts running low
    (name, stock left) when it was read."""

    business_date: date
    registrations: int
    lookups: int
    redemptions: int
    points_redeemed: int
    cards_replaced: int
    low_stock: tuple[tuple[str, int], ...] = ()


def tally_day(
    business_date: date,
    records: Iterable[tuple[str, Mapping[str, object]]],
    low_stock: Iterable[tuple[str, int]] = (),
) -> DayFigures:
    """Counts the day's audit ``records`` (action, detail); a redemption's detail holds the
    points it took."""
    actions: Counter[str] = Counter()
    points_redeemed = 0
    for action, detail in records:
        actions[action] += 1
        if action == REDEEMED:
            points_redeemed += int(str(detail.get("points", 0)))
    return DayFigures(
        business_date=business_date,
        registrations=actions[REGISTERED],
        lookups=actions[LOOKED_UP],
        redemptions=actions[REDEEMED],
        points_redeemed=points_redeemed,
        cards_replaced=actions[CARD_REPLACED],
        low_stock=tuple(low_stock),
    )
