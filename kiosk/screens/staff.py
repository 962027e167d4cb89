"""Staff tools behind badge and PIN: lost card, points adjustment, restock, gift handover,
reprint, clear faults, day report."""

from __future__ import annotations

from typing import Any, ClassVar

from kiosk.screens.base import StagedScreen, clear, make


class StaffScreen(StagedScreen):
    stage_property = "page"
    panels: ClassVar[dict[str, str]] = {
        "sign_in": "SignInPanel",
        "menu": "StaffMenu",
        "lost": "LostCardPanel",
        "adjust": "AdjustPanel",
        "restock": "RestockPanel",
        "handover": "HandoverPanel",
        "devices": "DevicesPanel",
        "report": "ReportPanel",
    }

    def on_vm(self, instance: Any, vm: Any) -> None:
        super().on_vm(instance, vm)
        self.listen(vm, gifts=lambda *_a: self.fill(), devices=lambda *_a: self.fill())

    def show_stage(self) -> None:
        super().show_stage()
        self.fill()

    def fill(self) -> None:
        body = self.ids.get("body")
        if body is None or not body.children:
            return
        panel = body.children[0]
        if panel.panel_name == "RestockPanel":
            panel.ids.rows.data = [{"tile": tile, "vm": self.vm} for tile in self.vm.gifts]
        elif panel.panel_name == "DevicesPanel":
            rows = panel.ids.rows
            clear(rows)
            for status in self.vm.devices:
                rows.add_widget(make("DeviceRow", status=status))
