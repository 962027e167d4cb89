"""The clock is injected everywhere so that rules and tests agree on "now" (always UTC)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def ensure_utc(moment: datetime) -> datetime:
    """Reject naive datetimes: every time in the appliance is UTC-aware."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times must carry a timezone (UTC)")
    return moment.astimezone(UTC)
