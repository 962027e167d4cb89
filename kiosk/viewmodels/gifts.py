"""The gift catalogue: browse, pick, confirm, redeem, print the voucher."""

from __future__ import annotations

import uuid
from typing import Any

from kivy.properties import ListProperty, ObjectProperty, StringProperty

from edge.domain.errors import KioskError
from edge.station.api import GiftTile, MemberCenter, MemberView, RedeemOutcome
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message, refusal_message
from kiosk.viewmodels.base import Runner, ViewModel
from kiosk.viewmodels.session import SessionViewModel


def availability(tile: GiftTile, member: MemberView | None) -> str:
    """``ok``, ``out_of_stock`` or ``insufficient_points``: said on the tile, before a tap."""
    if tile.stock <= 0:
        return "out_of_stock"
    if member is not None and member.available < tile.points_price:
        return "insufficient_points"
    return "ok"


class GiftsViewModel(ViewModel):
    """``stage``: browse -> confirm -> working -> done (or back to browse)."""

    gifts = ListProperty([])
    selected = ObjectProperty(None, allownone=True)
    stage = StringProperty("browse")
    outcome = ObjectProperty(None, allownone=True)

    def __init__(
        self, center: MemberCenter, session: SessionViewModel, runner: Runner, **kw: Any
    ) -> None:
        super().__init__(runner, **kw)
        self.center = center
        self.session = session
        self._request_id = ""

    def load(self) -> None:
        self.stage, self.selected, self.outcome = "browse", None, None
        self.clear_notice()
        self.work(self.center.gifts, self._loaded)

    def _loaded(self, gifts: list[GiftTile]) -> None:
        self.gifts = gifts

    def availability(self, tile: GiftTile) -> str:
        return availability(tile, self.session.member)

    def select(self, sku: str) -> None:
        tile = next((g for g in self.gifts if g.sku == sku), None)
        if tile is None or self.busy:
            return
        state = self.availability(tile)
        if state == "out_of_stock":
            self.say(N_("{name} is out of stock right now."), "warn", name=tile.name)
            return
        if state == "insufficient_points":
            member: MemberView = self.session.member
            self.say(
                N_("{name} needs {price} points; you have {available}."),
                "warn",
                name=tile.name,
                price=tile.points_price,
                available=member.available,
            )
            return
        self.selected = tile
        self._request_id = f"kiosk-{uuid.uuid4().hex}"  # a double tap redeems once
        self.stage = "confirm"
        self.clear_notice()

    def cancel(self) -> None:
        self.selected = None
        self.stage = "browse"
        self.clear_notice()

    def confirm(self) -> None:
        if self.stage != "confirm" or self.selected is None:
            return
        member: MemberView = self.session.member
        sku, card, rid = self.selected.sku, member.card_no or "", self._request_id
        self.stage = "working"
        self.say(N_("Redeeming and printing your voucher..."), "info")
        self.work(lambda: self.center.redeem(card, sku, rid), self._redeemed, self._failed)

    def _redeemed(self, outcome: RedeemOutcome) -> None:
        if self.session.member is not None:
            self.session.update(outcome.member)
        self.outcome = outcome
        self.stage = "done"
        if outcome.voucher.printed:
            self.say(
                N_("Done! Take your voucher to the service desk for {name}."),
                "ok",
                name=outcome.name,
            )
        else:
            self.say(
                N_("{name} is yours, but the voucher did not print: {fault} Staff can reprint it."),
                "warn",
                name=outcome.name,
                fault=fault_message(outcome.voucher.problem),
            )
        self.work(self.center.gifts, self._loaded)

    def _failed(self, exc: Exception) -> None:
        self.stage = "browse"
        self.selected = None
        if isinstance(exc, KioskError):
            self.say(refusal_message(exc.code), "warn")
        else:
            self.refused(exc)
