"""The member's points: check-in, birthday gift and a printed statement."""

from __future__ import annotations

from edge.domain.member_view import MemberView
from edge.station.api import BonusOutcome, PrintOutcome
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.session import ForMember


class PointsViewModel(ForMember):
    """Acts for ``session.member``; each action's outcome brings the member as they are now."""

    def check_in(self) -> None:
        card = self.card_no
        self.work(lambda: self.center.check_in(card), self._bonus_done)

    def claim_birthday_gift(self) -> None:
        card = self.card_no
        self.work(lambda: self.center.claim_birthday_gift(card), self._bonus_done)

    def _bonus_done(self, outcome: BonusOutcome) -> None:
        if self.session.member is not None:
            self.session.update(outcome.member)
        if outcome.kind == "checkin":
            self.say(N_("Checked in: +{points} points."), "ok", points=outcome.points)
        else:
            self.say(N_("Happy birthday! +{points} points are yours."), "ok", points=outcome.points)

    def toggle_messages(self) -> None:
        """Turns the member's SMS reminders on or off (each a change of their consent)."""
        member = self.session.member
        if member is None:
            return
        card, on = self.card_no, not member.message_consent
        self.work(lambda: self.center.set_messages(card, on), self._messages_done)

    def _messages_done(self, member: MemberView) -> None:
        if self.session.member is not None:
            self.session.update(member)
        if member.message_consent:
            self.say(N_("SMS reminders are on. You can turn them off here at any time."), "ok")
        else:
            self.say(N_("SMS reminders are off."), "ok")

    def print_statement(self) -> None:
        card = self.card_no
        self.say(N_("Printing..."), "info")
        self.work(lambda: self.center.print_statement(card), self._printed)

    def _printed(self, outcome: PrintOutcome) -> None:
        if outcome.printed:
            self.say(N_("Your statement is printed. Please take it."), "ok")
        else:
            self.say(
                N_("{fault} The statement could not be printed."),
                "warn",
                fault=fault_message(outcome.problem),
            )
