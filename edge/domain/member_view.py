"""A member as every door shows them: the screen, the console and the printed slips.

One frozen value, built by the member services in the store's timezone with personal data
already masked, so nothing downstream re-shapes or re-masks it. It imports only the domain,
which lets the touchscreen hold it without reaching storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from edge.domain.points import ExpiringPoints


@dataclass(frozen=True)
class HistoryLine:
    """One ledger entry: when (UTC, and its store-local day), what kind, how many points."""

    at: datetime
    # purchase, checkin, birthday, referral, redemption, expiry, adjustment, refund, merge_in
    kind: str
    points: int
    ref: str
    on: date
    note: str = ""  # an entry HQ booked with a note (a merge's)


@dataclass(frozen=True, kw_only=True)
class MemberView:
    """What the kiosk and the console show about a member; personal data already masked.

    ``card_no`` is the card the member was found by (for staff, the newest one that is not
    replaced); ``None`` when there is none. ``next_tier_missing`` is cents of spend or
    points, per ``tier_basis``.
    """

    member_id: str
    card_no: str | None
    card_state: str | None
    card_masked: str
    phone_masked: str
    name_masked: str
    tier: str
    tier_name_zh: str
    tier_name_en: str
    balance: int
    available: int
    pending: int
    expiring: tuple[ExpiringPoints, ...]
    next_tier: str | None
    next_tier_name_zh: str
    next_tier_name_en: str
    next_tier_missing: int | None
    tier_basis: str
    birthday_month: bool
    checked_in_today: bool
    birthday_bonus_claimed: bool
    overdraft_flagged: bool
    registered_at: datetime
    deleted: bool
    history: tuple[HistoryLine, ...] = ()
    # agreed to messages (SMS reminders), apart from the membership terms
    message_consent: bool = False
