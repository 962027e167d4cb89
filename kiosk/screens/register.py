"""A new card in a few taps: phone, surname grid, birthday, referral, the terms in full."""

from __future__ import annotations

from typing import Any, ClassVar

from kiosk.screens.base import StagedScreen, make
from kiosk.viewmodels.register import SURNAMES


class RegisterScreen(StagedScreen):
    stage_property = "step"
    panels: ClassVar[dict[str, str]] = {
        "phone": "RegPhonePanel",
        "name": "RegNamePanel",
        "birthday": "RegBirthdayPanel",
        "referral": "RegReferralPanel",
        "terms": "RegTermsPanel",
        "working": "RegWorkingPanel",
        "done": "RegDonePanel",
    }

    def on_app(self, _instance: Any, app: Any) -> None:
        self.listen(app.tr, language=lambda _i, lang: self.vm and self.vm.load_terms(lang))

    def show_stage(self) -> None:
        super().show_stage()
        body = self.ids.get("body")
        if body is None or not body.children or body.children[0].panel_name != "RegNamePanel":
            return
        grid = body.children[0].ids.surnames
        if grid.children:
            return
        for surname in SURNAMES:
            grid.add_widget(make("SurnameButton", text=surname, vm=self.vm))
