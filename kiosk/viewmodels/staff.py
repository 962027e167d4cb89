"""Staff tools: sign in with badge and PIN, lost card, points adjustment, restock, gift
handover, reprint, faults, day report."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kivy.properties import ListProperty, ObjectProperty, StringProperty

from edge.domain.corrections import SETTLEMENT_REASONS
from edge.domain.errors import KioskError
from edge.domain.text import typed_digit
from edge.station.api import (
    STAFF_BADGE_PREFIX,
    AdjustOutcome,
    DailyReport,
    DeviceStatus,
    GiftHandover,
    GiftTile,
    MemberCenter,
    MemberView,
    PrintOutcome,
    ReplacementOutcome,
    StaffSession,
)
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.base import Runner, ViewModel
from kiosk.viewmodels.session import SessionViewModel

PIN_DIGITS = 6
# the reasons that settle what a member owes (the amount is what they owe)
SETTLEMENTS = frozenset(r.value for r in SETTLEMENT_REASONS)


class StaffViewModel(ViewModel):
    """``page``: sign_in (``field`` staff_id then pin) -> menu -> lost/adjust/restock/
    handover/report/devices."""

    page = StringProperty("sign_in")
    field = StringProperty("staff_id")
    staff_id = StringProperty("")
    pin = StringProperty("")
    staff = ObjectProperty(None, allownone=True)
    phone = StringProperty("")
    member = ObjectProperty(None, allownone=True)
    verified = ObjectProperty(False)
    replacement = ObjectProperty(None, allownone=True)
    gifts = ListProperty([])
    devices = ListProperty([])
    report = ObjectProperty(None, allownone=True)  # the day's figures (DayFigures)
    handover = ObjectProperty(None, allownone=True)  # the last gift handed over (GiftHandover)
    # adjusting a member's points: the amount typed, credit or debit, the reason, and a
    # supervisor's staff number and PIN when the amount needs approval
    amount = StringProperty("")
    credit = ObjectProperty(True)
    reason = StringProperty("missed_points")
    approver_field = StringProperty("")  # '', 'staff_id' or 'pin'
    approver_id = StringProperty("")
    approver_pin = StringProperty("")
    adjusted = ObjectProperty(None, allownone=True)  # the last adjustment (AdjustOutcome)

    def __init__(
        self,
        center: MemberCenter,
        session: SessionViewModel,
        runner: Runner,
        permission: str = "lookup_member",
        **kw: Any,
    ) -> None:
        super().__init__(runner, **kw)
        self.center = center
        self.session = session
        self.permission = permission

    def start(self) -> None:
        self.page, self.field, self.staff_id, self.pin, self.staff = (
            "sign_in",
            "staff_id",
            "",
            "",
            None,
        )
        self.clear_notice()
        self.session.start(private=True)

    def sign_out(self) -> None:
        if self.staff is not None:
            self.center.staff_sign_out(self.staff)
        self.staff = None
        self.session.end()

    def badge(self, text: str) -> None:
        """A staff badge scanned: its staff number is filled in; the PIN is next."""
        if not text.startswith(STAFF_BADGE_PREFIX) or self.page != "sign_in":
            return
        self.staff_id = text[len(STAFF_BADGE_PREFIX) :].strip()
        self.field = "pin"
        self.say(N_("Badge read. Please enter your PIN."), "info")

    def press(self, key: str) -> None:
        if self.busy:
            return
        if self.page == "sign_in":
            value, limit = (
                getattr(self, self.field),
                (12 if self.field == "staff_id" else PIN_DIGITS),
            )
            if key == "back":
                setattr(self, self.field, value[:-1])
            elif key == "ok":
                self._sign_in_step()
            elif (digit := typed_digit(key)) is not None and len(value) < limit:
                setattr(self, self.field, value + digit)
        elif self.page == "lost" or (self.page == "adjust" and self.member is None):
            if key == "back":
                self.phone = self.phone[:-1]
            elif key == "ok":
                self.find_member()
            elif (digit := typed_digit(key)) is not None and len(self.phone) < 11:
                self.phone += digit
        elif self.page == "adjust":
            self._adjust_key(key)

    def _sign_in_step(self) -> None:
        if self.field == "staff_id":
            if not self.staff_id:
                self.say(N_("Please enter a staff number."), "warn")
                return
            self.field = "pin"
            self.clear_notice()
            return
        staff_id, pin = self.staff_id, self.pin
        self.work(
            lambda: self.center.staff_sign_in(staff_id, pin, self.permission),
            self._signed_in,
            self._sign_in_failed,
        )

    def _sign_in_failed(self, exc: Exception) -> None:
        self.pin = ""
        self.refused(exc)

    def _signed_in(self, staff: StaffSession) -> None:
        self.staff = staff
        self.pin = ""
        self.page = "menu"
        self.say(N_("Signed in as {staff_id}."), "ok", staff_id=staff.staff_id)

    def open_page(self, page: str) -> None:
        self.clear_notice()
        self.page = page
        if page in ("lost", "adjust"):
            self.phone, self.member, self.verified, self.replacement = "", None, False, None
            self.amount, self.credit, self.reason, self.adjusted = "", True, "missed_points", None
            self.approver_field, self.approver_id, self.approver_pin = "", "", ""
        elif page == "restock":
            self.work(self.center.gifts, self._gifts)
        elif page == "handover":
            self.handover = None
            self.say(N_("Scan the QR code on the gift voucher."), "info")
        elif page == "devices":
            self.work(self.center.device_status, self._devices)

    def _gifts(self, gifts: list[GiftTile]) -> None:
        self.gifts = gifts

    def _devices(self, devices: list[DeviceStatus]) -> None:
        self.devices = devices

    # lost card
    def find_member(self) -> None:
        staff, phone = self.staff, self.phone
        self.work(lambda: self.center.find_member(staff, phone), self._found)

    def _found(self, member: MemberView) -> None:
        self.member = member
        self.verified = False
        if self.page == "adjust":
            self.say(N_("Choose credit or take and the reason, type the points, then Book."))
        else:
            self.say(N_("Check the member's identity document, then confirm."), "info")

    def confirm_identity(self) -> None:
        if self.member is not None:
            self.verified = True
            self.clear_notice()

    def replace_card(self) -> None:
        if self.member is None or not self.verified:
            self.say(N_("Check the member's identity document, then confirm."), "warn")
            return
        staff, card = self.staff, self.member.card_no
        self.say(N_("Blocking the old card and issuing the new one..."), "info")
        self.work(lambda: self.center.replace_lost_card(staff, card), self._replaced)

    def _replaced(self, outcome: ReplacementOutcome) -> None:
        self.replacement = outcome
        self.member = None
        card = outcome.card
        if card.dispensed and card.slip.printed:
            self.say(
                N_("New card {card} issued with {points} points."),
                "ok",
                card=outcome.new_card_no,
                points=outcome.balance,
            )
        else:
            problem = card.dispense_problem or card.slip.problem
            self.say(
                N_("New card {card} is active, but: {fault}"),
                "warn",
                card=outcome.new_card_no,
                fault=fault_message(problem),
            )

    # adjusting points (a member found by phone, as for a lost card)
    def _adjust_key(self, key: str) -> None:
        field = {"staff_id": "approver_id", "pin": "approver_pin"}.get(
            self.approver_field, "amount"
        )
        value = getattr(self, field)
        limit = {"approver_id": 12, "approver_pin": PIN_DIGITS}.get(field, 7)
        if key == "back":
            setattr(self, field, value[:-1])
        elif key == "ok":
            self.submit_adjustment()
        elif field == "amount" and self.settling:
            return  # the amount is what the member owes
        elif (digit := typed_digit(key)) is not None and len(value) < limit:
            leading_zero = field == "amount" and not value and digit == "0"
            setattr(self, field, value if leading_zero else value + digit)

    def toggle_sign(self) -> None:
        self.credit = not self.credit

    def choose_reason(self, reason: str) -> None:
        if reason in SETTLEMENTS and not self.owes:
            return
        self.reason = reason
        self.approver_field, self.approver_id, self.approver_pin = "", "", ""

    @property
    def owes(self) -> bool:
        """The member found owes points (a negative balance): it can be settled here."""
        return self.member is not None and self.member.balance < 0

    @property
    def settling(self) -> bool:
        return self.reason in SETTLEMENTS

    def submit_adjustment(self) -> None:
        """Books the adjustment; above the approval limit it first asks for a supervisor's
        staff number, then their PIN."""
        if self.member is None:
            return
        if self.settling:
            points = -self.member.balance  # what is owed, credited back to zero
        elif not self.amount:
            self.say(N_("Type the number of points."), "warn")
            return
        else:
            points = int(self.amount) * (1 if self.credit else -1)
        if self.approver_field == "staff_id":
            if not self.approver_id:
                self.say(N_("Please enter a staff number."), "warn")
                return
            self.approver_field = "pin"
            self.say(
                N_("Supervisor {staff_id}: enter your PIN."), "info", staff_id=self.approver_id
            )
            return
        if not self.approver_field and abs(points) > self.center.approval_limit:
            self.approver_field = "staff_id"
            self.say(
                N_("More than {limit} points: a supervisor approves. Supervisor's staff number?"),
                "info",
                limit=self.center.approval_limit,
            )
            return
        approver = (self.approver_id, self.approver_pin) if self.approver_field else None
        staff, card, reason = self.staff, self.member.card_no, self.reason
        if self.settling:
            self.work(
                lambda: self.center.settle_overdraft(staff, card, reason, approver),
                self._adjusted,
                self._adjust_refused,
            )
            return
        self.work(
            lambda: self.center.adjust_points(staff, card, points, reason, approver),
            self._adjusted,
            self._adjust_refused,
        )

    def _adjusted(self, outcome: AdjustOutcome) -> None:
        self.adjusted = outcome
        if self.member is not None:  # the line above the keypad shows the balance now
            self.member = replace(self.member, balance=outcome.balance)
        self.amount, self.approver_field, self.approver_id, self.approver_pin = "", "", "", ""
        if outcome.reason in SETTLEMENTS:
            self.reason = "missed_points"
            self.say(
                N_("The {owed} points owed are settled. Balance {balance}."),
                "ok",
                owed=outcome.points,
                balance=outcome.balance,
            )
        elif outcome.overdraft:
            self.say(
                N_("{points:+d} points booked. The member now owes {owed} points."),
                "warn",
                points=outcome.points,
                owed=-outcome.balance,
            )
        else:
            self.say(
                N_("{points:+d} points booked. Balance {balance}."),
                "ok",
                points=outcome.points,
                balance=outcome.balance,
            )

    def _adjust_refused(self, exc: Exception) -> None:
        self.approver_field, self.approver_id, self.approver_pin = "", "", ""
        self.refused(exc)

    # restock
    def restock(self, sku: str, qty: int) -> None:
        staff = self.staff
        self.work(lambda: self.center.restock(staff, sku, qty), self._restocked)

    def _restocked(self, tile: GiftTile) -> None:
        self.gifts = [tile if g.sku == tile.sku else g for g in self.gifts]
        self.say(N_("{name}: {stock} in stock."), "ok", name=tile.name, stock=tile.stock)

    # gift handover (核销)
    def voucher(self, text: str) -> None:
        """A code scanned while signed in, on the menu or the handover page: the voucher of
        a gift to hand over."""
        if self.staff is None or self.busy or self.page not in ("menu", "handover"):
            return
        staff, code = self.staff, text
        self.page, self.handover = "handover", None
        self.say(N_("Checking the voucher..."), "info")
        self.work(
            lambda: self.center.hand_over_gift(staff, code),
            self._handed_over,
            self._handover_refused,
        )

    def _handed_over(self, handover: GiftHandover) -> None:
        self.handover = handover
        if handover.verified:
            self.say(
                N_("Hand over {qty} x {name}. The voucher is now collected."),
                "ok",
                qty=handover.qty,
                name=handover.name,
            )
        else:
            self.say(
                N_("Voucher of another kiosk, accepted offline: hand over the gift printed on it."),
                "warn",
            )

    def _handover_refused(self, exc: Exception) -> None:
        if isinstance(exc, KioskError) and exc.code == "voucher_expired":
            date = str(exc.details.get("valid_until", ""))
            self.say(
                N_("This voucher expired on {date}. Do not hand the gift over."), "warn", date=date
            )
        elif (
            isinstance(exc, KioskError)
            and exc.code == "voucher_collected"
            and "store_id" in (exc.details)
        ):  # HQ says where and when
            self.say(
                N_("Collected before, at store {store} on {when}. Do not hand the gift over."),
                "warn",
                store=str(exc.details.get("store_id", "")),
                when=str(exc.details.get("when", "")),
            )
        else:
            self.refused(exc)

    # reprint, faults, report
    def reprint(self) -> None:
        staff = self.staff
        self.say(N_("Printing..."), "info")
        self.work(lambda: self.center.reprint_last_voucher(staff), self._reprinted)

    def _reprinted(self, outcome: PrintOutcome) -> None:
        if outcome.printed:
            self.say(N_("The last voucher was reprinted."), "ok")
        else:
            self.say(
                N_("{fault} Nothing was printed."), "warn", fault=fault_message(outcome.problem)
            )

    def clear_faults(self) -> None:
        staff = self.staff
        self.page = "devices"
        self.work(lambda: self.center.clear_faults(staff), self._cleared)

    def _cleared(self, devices: list[DeviceStatus]) -> None:
        self.devices = devices
        if all(d.ok for d in devices):
            self.say(N_("All devices are ready."), "ok")
        else:
            bad = next(d for d in devices if not d.ok)
            self.say(N_("Still a fault: {fault}"), "warn", fault=fault_message(bad.code))

    def daily_report(self) -> None:
        staff = self.staff
        self.page = "report"
        self.say(N_("Printing..."), "info")
        self.work(lambda: self.center.daily_report(staff), self._reported)

    def _reported(self, report: DailyReport) -> None:
        self.report = report.figures
        if report.printout.printed:
            self.say(N_("The day's report is printed."), "ok")
        else:
            self.say(
                N_("{fault} Nothing was printed."),
                "warn",
                fault=fault_message(report.printout.problem),
            )
