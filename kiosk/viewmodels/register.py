"""A new card: phone, optional form of address and birthday, terms, optional referral."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from kivy.properties import BooleanProperty, ListProperty, ObjectProperty, StringProperty

from edge.domain.text import typed_digit
from edge.station.api import MemberCenter, NewMember, RegistrationOutcome
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.base import Runner, ViewModel
from kiosk.viewmodels.session import SessionViewModel

# Common surnames, picked from a grid: the appliance has no Chinese input method.
SURNAMES = (
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周",
    "徐", "孙", "马", "朱", "胡", "郭", "何", "林", "高", "罗",
    "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹",
)  # fmt: skip
TITLES = ("先生", "女士")
STEPS = ("phone", "name", "birthday", "referral", "terms")


class RegisterViewModel(ViewModel):
    """``step`` walks through :data:`STEPS`, then ``working`` and ``done``."""

    step = StringProperty("phone")
    phone = StringProperty("")
    surname = StringProperty("")
    title = StringProperty("")
    birthday = StringProperty("")  # YYYYMMDD as typed
    referrer = StringProperty("")
    consent = BooleanProperty(False)
    messages = BooleanProperty(False)  # SMS reminders: a separate choice, unticked by default
    terms_text = StringProperty("")
    terms_version = StringProperty("")
    outcome = ObjectProperty(None, allownone=True)
    take = StringProperty("")  # the customer's next step once the card is issued
    slots = ListProperty([])  # where to take it from: "card", "slip", or "staff"

    def __init__(
        self, center: MemberCenter, session: SessionViewModel, runner: Runner, **kw: Any
    ) -> None:
        super().__init__(runner, **kw)
        self.center = center
        self.session = session
        self._request_id = ""

    def start(self, language: str) -> None:
        self.step, self.phone, self.surname, self.title = "phone", "", "", ""
        self.birthday, self.referrer, self.consent, self.outcome = "", "", False, None
        self.messages = False
        self.take, self.slots = "", []
        self._request_id = f"kiosk-{uuid.uuid4().hex}"
        self.clear_notice()
        self.session.start(private=True)
        self.load_terms(language)

    def load_terms(self, language: str) -> None:
        version, text = self.center.privacy_terms(language)
        self.terms_version, self.terms_text = version, text

    def press(self, key: str) -> None:
        field, limit = {"phone": ("phone", 11), "birthday": ("birthday", 8)}.get(
            self.step, ("referrer", 11)
        )
        value = getattr(self, field)
        if key == "back":
            setattr(self, field, value[:-1])
        elif (digit := typed_digit(key)) is not None and len(value) < limit:
            setattr(self, field, value + digit)
            self.clear_notice()

    def pick_surname(self, surname: str) -> None:
        self.surname = "" if self.surname == surname else surname

    def pick_title(self, title: str) -> None:
        self.title = "" if self.title == title else title

    def toggle_consent(self) -> None:
        self.consent = not self.consent
        if self.consent:
            self.clear_notice()

    def toggle_messages(self) -> None:
        self.messages = not self.messages

    def parsed_birthday(self) -> date | None:
        if not self.birthday:
            return None
        if len(self.birthday) != 8:
            raise ValueError
        return date(int(self.birthday[:4]), int(self.birthday[4:6]), int(self.birthday[6:]))

    def next(self) -> None:
        """Checks the current step and moves on (the last step registers)."""
        if self.step == "phone" and (len(self.phone) != 11 or not self.phone.startswith("1")):
            self.say(N_("Please enter an 11-digit mobile number starting with 1."), "warn")
            return
        if self.step == "name" and bool(self.surname) != bool(self.title):
            self.say(N_("Please choose a surname and a form of address, or skip."), "warn")
            return
        if self.step == "birthday":
            try:
                self.parsed_birthday()
            except ValueError:
                self.say(N_("Please enter a real birthday (year, month, day)."), "warn")
                return
        if self.step == "referral" and self.referrer and len(self.referrer) != 11:
            self.say(N_("Please enter an 11-digit mobile number starting with 1."), "warn")
            return
        if self.step == "terms":
            self.submit()
            return
        self.clear_notice()
        self.step = STEPS[STEPS.index(self.step) + 1]

    def skip(self) -> None:
        """Optional steps can be skipped: what was entered there is dropped."""
        if self.step == "name":
            self.surname = self.title = ""
        elif self.step == "birthday":
            self.birthday = ""
        elif self.step == "referral":
            self.referrer = ""
        else:
            return
        self.clear_notice()
        self.step = STEPS[STEPS.index(self.step) + 1]

    def back(self) -> bool:
        if self.step in STEPS and STEPS.index(self.step) > 0:
            self.step = STEPS[STEPS.index(self.step) - 1]
            self.clear_notice()
            return True
        return False

    def submit(self) -> None:
        if not self.consent:
            self.say(N_("Please read the privacy terms and tick to agree."), "warn")
            return
        new = NewMember(
            phone=self.phone,
            consent=True,
            surname=self.surname,
            title=self.title,
            birthday=self.parsed_birthday(),
            referrer_phone=self.referrer,
            message_consent=self.messages,
        )
        rid = self._request_id
        self.step = "working"
        self.say(N_("Registering and issuing your card..."), "info")
        self.work(lambda: self.center.register(new, rid), self._done, self._failed)

    def _failed(self, exc: Exception) -> None:
        self.step = "terms"
        self.refused(exc)

    def _done(self, outcome: RegistrationOutcome) -> None:
        self.outcome = outcome
        self.step = "done"
        self.session.start(outcome.member)
        card = outcome.card
        # What the customer must do now, the largest text on the screen, with a picture of
        # where; the notice under it says what went wrong, if anything did.
        if card.dispensed and card.slip.printed:
            self.take, self.slots = N_("Please take your card and your slip"), ["card", "slip"]
            self.say(N_("Welcome!"), "ok")
        elif card.dispensed:
            self.take, self.slots = N_("Please take your card"), ["card"]
            self.say(N_("Welcome! {fault}"), "warn", fault=fault_message(card.slip.problem))
        elif card.slip.printed:
            self.take, self.slots = (
                N_("Please take your slip: staff will give you your card"),
                ["slip"],
            )
            self.say(N_("Welcome! {fault}"), "warn", fault=fault_message(card.dispense_problem))
        else:
            self.take, self.slots = N_("Please ask the staff for your card"), ["staff"]
            self.say(N_("Welcome! Your card could not be issued here."), "warn")
