"""Offline limits: while HQ is unreachable, caps bound what a double spend could cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from edge.domain.errors import Refusal


@dataclass(frozen=True)
class OfflineLimit:
    max_points_per_redemption: int
    max_points_per_member: int
    max_points_per_device: int
    max_offline: timedelta


def check_offline_redemption(
    limit: OfflineLimit,
    points: int,
    offline_since: datetime,
    now: datetime,
    member_redeemed_offline: int,
    device_redeemed_offline: int,
) -> None:
    """Refuses a redemption that would exceed a cap; lookups and registration are not affected.

    The sums are points redeemed since ``offline_since`` (by this member, and on this device).
    """
    if now - offline_since > limit.max_offline:
        hours = int(limit.max_offline.total_seconds() // 3600)
        raise Refusal(
            f"redemption is paused: no contact with headquarters for more than {hours} h",
            code="offline_paused",
        )
    if points > limit.max_points_per_redemption:
        raise Refusal(
            f"while offline, one redemption is limited to {limit.max_points_per_redemption} points",
            code="offline_cap_redemption",
            cap=limit.max_points_per_redemption,
        )
    if member_redeemed_offline + points > limit.max_points_per_member:
        raise Refusal(
            f"while offline, a member may redeem at most {limit.max_points_per_member} points",
            code="offline_cap_member",
            cap=limit.max_points_per_member,
            used=member_redeemed_offline,
        )
    if device_redeemed_offline + points > limit.max_points_per_device:
        raise Refusal(
            "this kiosk reached its offline redemption limit; please try again later",
            code="offline_cap_device",
            cap=limit.max_points_per_device,
            used=device_redeemed_offline,
        )
