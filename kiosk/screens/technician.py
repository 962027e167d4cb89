"""Technician mode (the logo held down, then a technician PIN): diagnostics of this kiosk."""

from __future__ import annotations

from typing import Any, ClassVar

from kiosk.screens.base import StagedScreen, clear, make


class TechnicianScreen(StagedScreen):
    stage_property = "page"
    panels: ClassVar[dict[str, str]] = {"sign_in": "SignInPanel", "diagnostics": "DiagnosticsPanel"}

    def on_vm(self, instance: Any, vm: Any) -> None:
        super().on_vm(instance, vm)
        self.listen(vm, lines=lambda *_a: self.fill())

    def show_stage(self) -> None:
        super().show_stage()
        self.fill()

    def fill(self) -> None:
        body = self.ids.get("body")
        if body is None or not body.children or body.children[0].panel_name != "DiagnosticsPanel":
            return
        rows = body.children[0].ids.rows
        clear(rows)
        for line in self.vm.lines:
            rows.add_widget(make("SelfTestRow", line=line))
