"""What the touchscreen may ask of the member center: plain values and one interface.

This module imports nothing beyond the standard library and the domain's values, so the Kivy
app can depend on it without reaching storage, MQTT or a device (the import contracts check
it). A member crosses it in one shape, :class:`edge.domain.member_view.MemberView`, the one
the services build; every outcome that changes a member carries them as they are after it,
so a journey reads the member once.

:mod:`edge.station.center` implements
:class:`MemberCenter` over the services and the devices; the app receives an instance at
start-up.

Every call may block (database, printer, dispenser, network): the app calls them off the UI
thread. Refusals arrive as :class:`edge.domain.errors.KioskError` with a stable ``code``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Protocol

from edge.domain.day_report import DayFigures
from edge.domain.member_view import HistoryLine, MemberView
from edge.domain.points import ExpiringPoints

STAFF_BADGE_PREFIX = "STAFF:"


@dataclass(frozen=True)
class GiftTile:
    sku: str
    name: str
    kind: str  # gift or coupon
    points_price: int
    stock: int
    low: bool
    coupon_value_cents: int
    picture: str = ""  # the picture to show, scaled to a tile's size ('' : none on disk)


@dataclass(frozen=True)
class BonusOutcome:
    kind: str  # checkin or birthday
    points: int
    balance: int
    member: MemberView


@dataclass(frozen=True)
class PrintOutcome:
    """Whether paper came out; ``problem`` is a device fault code (paper_out, jam, ...)."""

    printed: bool
    problem: str = ""


@dataclass(frozen=True)
class RedeemOutcome:
    sku: str
    name: str
    qty: int
    points: int
    balance: int
    voucher: PrintOutcome
    low_stock: bool
    member: MemberView


@dataclass(frozen=True)
class GiftHandover:
    """A gift handed over against its voucher (核销): what to give, and to which card.

    ``verified`` is False for another kiosk's voucher taken while HQ is unreachable: the
    gift is the one printed on the slip, and ``name`` is empty.
    """

    name: str
    qty: int
    card_masked: str
    valid_until: str  # the printed date, ISO ('' when not known here)
    verified: bool


@dataclass(frozen=True)
class CouponTile:
    """One coupon of the member's wallet (from HQ's campaigns), as the screen shows it."""

    coupon_id: str
    title: str
    kind: str  # amount_off, threshold_off, percent_off or gift
    value_cents: int
    threshold_cents: int
    percent: int
    gift_name: str  # for a gift coupon: the gift's name here (its code if not in the catalogue)
    valid_until: date  # the last day it can be used, in the store's time zone
    usable_now: bool  # False for a coupon whose validity starts later


@dataclass(frozen=True)
class WalletView:
    """The member's coupons; ``reachable`` False when HQ could not be asked (the screen says
    so rather than "no coupons")."""

    reachable: bool
    coupons: tuple[CouponTile, ...] = ()


@dataclass(frozen=True)
class AdjustOutcome:
    """Points staff credited or took at the staff screen, and the member's balance after."""

    points: int
    reason: str
    balance: int
    approved_by: str | None
    overdraft: bool  # the member now owes points


@dataclass(frozen=True)
class NewMember:
    """What registration collected: digits and taps only (no free text on the appliance)."""

    phone: str
    consent: bool
    surname: str = ""
    title: str = ""  # 先生 or 女士
    birthday: date | None = None
    referrer_phone: str = ""
    message_consent: bool = False  # SMS reminders: a separate consent, unticked by default


@dataclass(frozen=True)
class CardIssue:
    """A card handed over: dispensed, or (dispenser empty or jammed) its number on a slip."""

    card_no: str
    dispensed: bool
    dispense_problem: str
    slip: PrintOutcome


@dataclass(frozen=True)
class RegistrationOutcome:
    member: MemberView
    referral_bonus: int
    card: CardIssue


@dataclass(frozen=True)
class StaffSession:
    """A signed-in staff member; ``token`` names the session the center holds."""

    staff_id: str
    role: str
    token: str = field(repr=False, default="")


@dataclass(frozen=True)
class ReplacementOutcome:
    old_card_no: str
    new_card_no: str
    balance: int
    member: MemberView  # with the new card
    card: CardIssue


@dataclass(frozen=True)
class DeviceStatus:
    """One device's health: ``state`` ok/degraded/failed, ``code`` a stable fault word."""

    device: str
    state: str
    code: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"  # HealthState.OK: the screen's side may not import drivers


@dataclass(frozen=True)
class SelfTestLine:
    device: str
    backend: str
    state: str
    code: str
    detail: str
    ms: float


@dataclass(frozen=True)
class DailyReport:
    figures: DayFigures
    printout: PrintOutcome


@dataclass(frozen=True)
class TechnicianInfo:
    version: str
    store_id: str
    device_id: str
    data_dir: str
    config_file: str
    config_present: bool
    keys_present: bool
    card_range: str
    sync_enabled: bool
    broker: str
    broker_reachable: bool | None  # None: sync disabled, not probed
    offline: bool
    hq_last_contact: datetime | None
    outbox_pending: int
    members: int
    log_tail: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class UiSettings:
    """The ``[ui]`` section for the app, plus where it may keep caches and logs."""

    idle_warn_s: float
    idle_clear_s: float
    language: str
    fullscreen: bool
    width: int
    height: int
    touch_provider: str
    touch_device: str
    touch_rotation: int
    touch_invert_x: bool
    touch_invert_y: bool
    rotation: int
    panel_mm: tuple[float, float]  # (0, 0): known from the resolution
    large_text: bool
    technician_gesture_s: float
    cache_dir: Path
    log_dir: Path


class Simulator(Protocol):
    """Hands and faults for the simulated devices (development, tests, the demo tour)."""

    def present_code(self, text: str) -> None: ...
    def printer_out_of_paper(self) -> None: ...
    def dispenser_jam(self) -> None: ...
    def dispenser_empty(self) -> None: ...
    def take_card(self) -> None: ...
    def press_help(self) -> None: ...
    def receipts(self) -> list[str]:
        """Titles of the receipts printed so far, oldest first."""
        ...


class MemberCenter(Protocol):
    """The member center as the touchscreen uses it (implemented in ``edge.station.center``)."""

    @property
    def simulator(self) -> Simulator | None: ...

    @property
    def ui_settings(self) -> UiSettings: ...

    # customers
    def identify(self, scanned: str) -> MemberView: ...
    def identify_by_phone(self, phone: str, proof: str) -> MemberView: ...
    def check_in(self, card_no: str) -> BonusOutcome: ...
    def claim_birthday_gift(self, card_no: str) -> BonusOutcome: ...
    def gifts(self) -> list[GiftTile]: ...
    def redeem(self, card_no: str, sku: str, request_id: str) -> RedeemOutcome: ...
    def print_statement(self, card_no: str) -> PrintOutcome: ...
    def wallet(self, card_no: str) -> WalletView: ...
    def print_coupon(self, card_no: str, coupon_id: str) -> PrintOutcome:
        """Prints one coupon of the member's wallet (asked of HQ again: one used meanwhile
        is refused with ``coupon_gone``)."""
        ...

    def register(self, new: NewMember, request_id: str) -> RegistrationOutcome: ...
    def set_messages(self, card_no: str, on: bool) -> MemberView:
        """Turns the member's SMS reminders on (their consent to the message terms in force;
        their phone goes to HQ sealed for HQ only) or off; the member as they are now."""
        ...

    def privacy_terms(self, language: str) -> tuple[str, str]:
        """The terms in force in ``language``: (version, full text)."""
        ...

    # staff
    def staff_sign_in(self, staff_id: str, pin: str, permission: str) -> StaffSession: ...
    def staff_sign_out(self, staff: StaffSession) -> None: ...
    def find_member(self, staff: StaffSession, phone: str) -> MemberView: ...
    def replace_lost_card(self, staff: StaffSession, card_no: str) -> ReplacementOutcome: ...
    def restock(self, staff: StaffSession, sku: str, qty: int) -> GiftTile: ...
    def reprint_last_voucher(self, staff: StaffSession) -> PrintOutcome: ...
    def hand_over_gift(self, staff: StaffSession, voucher_code: str) -> GiftHandover:
        """Marks the scanned gift voucher collected, once (a reprint is refused)."""
        ...

    @property
    def approval_limit(self) -> int:
        """Adjustments of more points than this need a supervisor's approval."""
        ...

    def adjust_points(
        self,
        staff: StaffSession,
        card_no: str,
        points: int,
        reason: str,
        approver: tuple[str, str] | None = None,
    ) -> AdjustOutcome:
        """Credits (> 0) or takes (< 0) points with a reason; ``approver`` is a supervisor's
        staff number and PIN, typed on the screen, for an amount above the limit."""
        ...

    def settle_overdraft(
        self,
        staff: StaffSession,
        card_no: str,
        how: str,
        approver: tuple[str, str] | None = None,
    ) -> AdjustOutcome:
        """Brings a member who owes points back to zero: ``overdraft_settled`` (the member
        made it good) or ``overdraft_written_off``; approved as an adjustment of that size."""
        ...

    def clear_faults(self, staff: StaffSession) -> list[DeviceStatus]: ...
    def daily_report(self, staff: StaffSession) -> DailyReport: ...

    # technician
    def self_test(self) -> list[SelfTestLine]: ...
    def technician_info(self) -> TechnicianInfo: ...
    def print_pairing_slip(self) -> PrintOutcome:
        """A new one-time pairing code and the device's certificate request, on a slip."""
        ...

    # devices
    def device_status(self) -> list[DeviceStatus]: ...
    def on_scan(self, callback: Callable[[str], None]) -> None:
        """Calls ``callback(text)`` on a scanner thread for every code presented."""
        ...

    def on_help_button(self, callback: Callable[[], None]) -> None: ...
    def touch_feedback(self) -> None: ...
    def call_staff(self) -> None: ...
    def close(self) -> None: ...


__all__ = [
    "STAFF_BADGE_PREFIX",
    "AdjustOutcome",
    "BonusOutcome",
    "CardIssue",
    "DailyReport",
    "DayFigures",
    "DeviceStatus",
    "ExpiringPoints",
    "GiftHandover",
    "GiftTile",
    "HistoryLine",
    "MemberCenter",
    "MemberView",
    "NewMember",
    "PrintOutcome",
    "RedeemOutcome",
    "RegistrationOutcome",
    "ReplacementOutcome",
    "SelfTestLine",
    "Simulator",
    "StaffSession",
    "TechnicianInfo",
    "UiSettings",
]
