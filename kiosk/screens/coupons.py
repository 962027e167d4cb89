"""The member's coupons from HQ's campaigns: what each gives, until when, and Print."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.station.api import CouponTile
from kiosk.i18n import N_
from kiosk.screens.base import KioskScreen


def _money(cents: int) -> str:
    return f"¥{cents // 100}" if cents % 100 == 0 else f"¥{cents // 100}.{cents % 100:02d}"


def gives_text(tr: Callable[[str], str], tile: CouponTile | None, _language: str = "") -> str:
    """What the coupon gives and until when, in the screen's language (a kv rule passes the
    language too, so that it follows a switch)."""
    if tile is None:
        return ""
    if tile.kind == "threshold_off":
        what = tr(N_("{amount} off when you spend {threshold}")).format(
            amount=_money(tile.value_cents), threshold=_money(tile.threshold_cents)
        )
    elif tile.kind == "percent_off":
        what = tr(N_("{percent}% off")).format(percent=tile.percent)
    elif tile.kind == "gift":
        what = tr(N_("Gift: {name}")).format(name=tile.gift_name)
    else:
        what = tr(N_("{amount} off")).format(amount=_money(tile.value_cents))
    until = tr(N_("use by {date}")).format(date=tile.valid_until.isoformat())
    later = "" if tile.usable_now else "  ·  " + tr(N_("not valid yet"))
    return f"{what}  ·  {until}{later}"


class CouponsScreen(KioskScreen):
    def on_vm(self, _instance: Any, vm: Any) -> None:
        self.listen(vm, coupons=lambda *_a: self.fill())

    def entered(self) -> None:
        self.fill()

    def fill(self) -> None:
        rows = self.ids.get("rows")
        if rows is None or self.vm is None:
            return
        rows.data = [{"tile": tile, "vm": self.vm} for tile in self.vm.coupons]
