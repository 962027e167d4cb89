"""Ledger entries as a device puts them into its events, for HQ's tests and benchmarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.domain.ids import IdFactory

ids = IdFactory()
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai on Monday 2 March 2026


def entry(
    member: str,
    points: int,
    device: str,
    store: str,
    lot: str | None = None,
    at: datetime | None = None,
    kind: str | None = None,
) -> dict:
    """One ledger entry: a purchase's credit (a new lot, expiring in a year) when ``points``
    is positive, else a redemption's debit of ``lot``."""
    at = at or T0
    e = {
        "id": ids.new(),
        "member_id": member,
        "kind": kind or ("purchase" if points > 0 else "redemption"),
        "points": points,
        "lot_id": lot or ids.new(),
        "ref": "r",
        "at": at.isoformat(),
        "store_id": store,
        "device_id": device,
    }
    if points > 0:
        e |= {"expires_at": (at + timedelta(days=365)).isoformat(), "available_at": at.isoformat()}
    return e
