"""The gift catalogue: tiles with picture, points price and availability; confirm; redeem."""

from __future__ import annotations

from typing import Any, ClassVar

from kiosk.screens.base import StagedScreen


class GiftsScreen(StagedScreen):
    panels: ClassVar[dict[str, str]] = {
        "browse": "GiftGrid",
        "confirm": "GiftConfirm",
        "working": "GiftWorking",
        "done": "GiftDone",
    }

    def on_vm(self, instance: Any, vm: Any) -> None:
        super().on_vm(instance, vm)
        self.listen(vm, gifts=lambda *_a: self.fill_grid())
        self.listen(self.app.session, member=lambda *_a: self.fill_grid())

    def show_stage(self) -> None:
        super().show_stage()
        self.fill_grid()

    def fill_grid(self) -> None:
        body = self.ids.get("body")
        if body is None or not body.children or body.children[0].panel_name != "GiftGrid":
            return
        body.children[0].ids.grid.data = [
            {"tile": tile, "state_code": self.vm.availability(tile), "vm": self.vm}
            for tile in self.vm.gifts
        ]
