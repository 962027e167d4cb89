"""Identification: a scanned code, or the phone number then four verification digits."""

from __future__ import annotations

from typing import Any

from kivy.properties import StringProperty

from edge.domain.text import typed_digit
from edge.station.api import STAFF_BADGE_PREFIX, MemberCenter, MemberView
from kiosk.i18n import N_
from kiosk.viewmodels.base import Runner, ViewModel
from kiosk.viewmodels.session import SessionViewModel

PHONE_DIGITS = 11
PROOF_DIGITS = 4


class IdentifyViewModel(ViewModel):
    """``stage`` is ``phone`` then ``proof``; ``identified`` fires with the member."""

    stage = StringProperty("phone")
    phone = StringProperty("")
    proof = StringProperty("")

    __events__ = ("on_identified",)

    def __init__(
        self, center: MemberCenter, session: SessionViewModel, runner: Runner, **kw: Any
    ) -> None:
        super().__init__(runner, **kw)
        self.center = center
        self.session = session

    def reset(self) -> None:
        self.stage, self.phone, self.proof = "phone", "", ""
        self.clear_notice()

    @property
    def phone_display(self) -> str:
        p = self.phone
        return " ".join(x for x in (p[:3], p[3:7], p[7:]) if x)

    def press(self, key: str) -> None:
        """A keypad key: a digit (full-width ones count as 0-9), ``back`` or ``ok``."""
        if self.busy:
            return
        field = "phone" if self.stage == "phone" else "proof"
        limit = PHONE_DIGITS if field == "phone" else PROOF_DIGITS
        value = getattr(self, field)
        if key == "back":
            setattr(self, field, value[:-1])
        elif key == "ok":
            self.submit()
        elif (digit := typed_digit(key)) is not None and len(value) < limit:
            setattr(self, field, value + digit)
            self.clear_notice()

    def submit(self) -> None:
        if self.stage == "phone":
            if len(self.phone) != PHONE_DIGITS or not self.phone.startswith("1"):
                self.say(N_("Please enter an 11-digit mobile number starting with 1."), "warn")
                return
            self.stage = "proof"
            self.say(N_("Enter the last 4 digits of your card, or your birthday as MMDD."), "info")
            return
        if len(self.proof) != PROOF_DIGITS:
            self.say(N_("Please enter 4 digits."), "warn")
            return
        phone, proof = self.phone, self.proof
        self.say(N_("Looking you up..."), "info")
        self.work(lambda: self.center.identify_by_phone(phone, proof), self._found, self._failed)

    def back(self) -> bool:
        """One step back; False when already at the first step."""
        if self.stage == "proof":
            self.stage, self.proof = "phone", ""
            self.clear_notice()
            return True
        return False

    def scanned(self, text: str) -> None:
        """A code from the scanner (member QR or card barcode)."""
        if text.startswith(STAFF_BADGE_PREFIX):
            return
        self.say(N_("Looking you up..."), "info")
        self.work(lambda: self.center.identify(text), self._found)

    def _failed(self, exc: Exception) -> None:
        self.proof = ""
        self.refused(exc)

    def _found(self, member: MemberView) -> None:
        self.reset()
        self.session.start(member)
        self.dispatch("on_identified", member)

    def on_identified(self, member: MemberView) -> None:
        pass
