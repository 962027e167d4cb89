"""The member's points: balance, tier, expiring points, history; check-in and birthday gift."""

from __future__ import annotations

from typing import Any

from kiosk.i18n import N_
from kiosk.screens.base import KioskScreen, clear, make

HISTORY_WORDS = {
    "purchase": N_("Purchase"),
    "checkin": N_("Check-in"),
    "birthday": N_("Birthday gift"),
    "referral": N_("Referral"),
    "redemption": N_("Gift exchange"),
    "expiry": N_("Expired"),
    "adjustment": N_("Adjustment"),
}


class MemberScreen(KioskScreen):
    def on_app(self, _instance: Any, app: Any) -> None:
        self.listen(app.session, member=lambda *_a: self.fill_history())
        self.listen(app.tr, language=lambda *_a: self.fill_history())

    def entered(self) -> None:
        self.fill_history()

    def fill_history(self) -> None:
        box = self.ids.get("history")
        member = self.app.session.member
        if box is None:
            return
        clear(box)
        if member is None:
            return
        for item in member.history[:6]:
            box.add_widget(
                make(
                    "HistoryRow",
                    text_when=item.on.isoformat(),
                    text_what=self.app.tr(HISTORY_WORDS.get(item.kind, item.kind)),
                    points=item.points,
                )
            )
