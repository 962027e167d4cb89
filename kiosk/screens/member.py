"""The member's points: balance, tier, expiring points, history; check-in and birthday gift."""

from __future__ import annotations

from typing import Any

from edge.domain.corrections import Reason, history_key
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
    "refund": N_("Refund"),
    "merge_in": N_("Records merged"),
    "merge_out": N_("Merged into another record"),
}
# an adjustment says why
REASON_WORDS: dict[str, str] = {
    Reason.MISSED_POINTS: N_("Missed points added"),
    Reason.GOODWILL: N_("Goodwill points"),
    Reason.CORRECTION: N_("Correction"),
    Reason.OVERDRAFT_SETTLED: N_("Owed points settled"),
    Reason.OVERDRAFT_WRITTEN_OFF: N_("Owed points written off"),
}
WORDS: dict[str, str] = {**HISTORY_WORDS, **REASON_WORDS}


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
            what = self.app.tr(WORDS.get(history_key(item.kind, item.ref), item.kind))
            box.add_widget(
                make(
                    "HistoryRow",
                    text_when=item.on.isoformat(),
                    text_what=f"{what}: {item.note}" if item.note else what,
                    points=item.points,
                )
            )
