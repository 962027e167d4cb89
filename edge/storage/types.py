"""Column types shared by the appliance's and HQ's schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.engine import Dialect


def naive_utc(value: datetime) -> datetime:
    """``value`` as stored: naive UTC. Refuses a naive time, so local time never sneaks in.

    By the offset, not the tzinfo object: what a message was parsed with is UTC too but not
    ``datetime.UTC``, and converting each such time again cost HQ a call per value.
    """
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("naive datetime stored: times must be UTC-aware")
    return (value - offset if offset else value).replace(tzinfo=None)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; refuses naive ones so local time never sneaks in."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"not a stored time: {value!r}")
        return value.replace(tzinfo=UTC)
