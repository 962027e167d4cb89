"""The member center for the touchscreen: the one door from the screen to services and devices.

Each method is one thing a person does at the kiosk: it calls the use cases (the rules and
every query live there), prints or dispenses what goes with it, and answers in the plain
values of :mod:`edge.station.api`, the member in the services' own
:class:`~edge.domain.member_view.MemberView`. A device fault after a committed change is
reported in the answer (the points are redeemed; the voucher did not print), never raised as
if nothing had happened.

HQ's points and offline rules reach this process through the database: the sync agent (a
separate process) stores each push, and the center puts the stored rules in force at start
and on every station poll (:func:`edge.services.pushes.follow_stored_rules`), so a rule HQ
pushes applies here without a restart, within one poll. (The gift catalogue is read from the
database on every use.) Beside the center, :mod:`edge.station.first_boot` prints the pairing
slip of an unprovisioned device, :mod:`edge.station.diagnostics` gathers the technician's
screen and :mod:`edge.station.staff_sessions` holds the staff signed in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from drivers.printer import Receipt
from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.member_view import MemberView
from edge.domain.points import local_date
from edge.domain.staff import Permission
from edge.protocol import WalletCoupon
from edge.security.personal import mask_card
from edge.services import contact as contact_service
from edge.services import corrections, coupons, desk, lookups, phone_proof, vouchers
from edge.services import gifts as gift_service
from edge.services import members as member_service
from edge.services import points as points_service
from edge.services import staff as staff_service
from edge.services.gifts import RedemptionResult
from edge.services.pictures import shown_path
from edge.services.pushes import follow_stored_rules
from edge.services.staff import StaffIdentity
from edge.station import slips
from edge.station.api import (
    AdjustOutcome,
    BonusOutcome,
    CardIssue,
    CouponTile,
    DailyReport,
    DeviceStatus,
    GiftHandover,
    GiftTile,
    NewMember,
    PrintOutcome,
    RedeemOutcome,
    RegistrationOutcome,
    ReplacementOutcome,
    SelfTestLine,
    Simulator,
    StaffSession,
    TechnicianInfo,
    UiSettings,
    WalletView,
)
from edge.station.devices import FPS_WINDOW_S, HEALTH_POLL_S, Station
from edge.station.diagnostics import LOG_FILE, technician_info
from edge.station.first_boot import FirstBootPairing
from edge.station.monitoring import PeripheralLog
from edge.station.privacy import privacy_terms
from edge.station.staff_sessions import StaffSessions

log = logging.getLogger(__name__)
# what a settlement made at the staff screen notes (there is no keyboard to type one)
SETTLEMENT_NOTES = {
    "overdraft_settled": "服务台确认会员已补足欠分 (staff screen)",
    "overdraft_written_off": "服务台核销欠分 (staff screen)",
}


def gift_tile(app: AppContext, line: gift_service.GiftLine) -> GiftTile:
    """A gift as a tile shows it; its picture only if the scaled copy is on disk (else the
    tile shows the gift's first character)."""
    shown = shown_path(app, line.picture)
    return GiftTile(
        line.sku,
        line.name,
        line.kind,
        line.points_price,
        line.stock,
        line.is_low,
        line.coupon_value_cents,
        str(shown) if shown else "",
    )


class KioskCenter:
    """The :class:`edge.station.api.MemberCenter` of one appliance."""

    def __init__(
        self, app: AppContext, station: Station, *, pairing_on_first_boot: bool = False
    ) -> None:
        """Puts HQ's stored rules in force and starts the station's telemetry records;
        with ``pairing_on_first_boot`` an unprovisioned device prints its pairing slip."""
        self.app = app
        self.station = station
        self.pairing = FirstBootPairing(app, station)
        self.sessions = StaffSessions(app)
        self._rules_lock = threading.Lock()
        self._rules_version = 0  # the stored rules version in force here; 0: none
        self.follow_hq_rules()
        station.monitor(PeripheralLog(app), on_poll=self._on_poll)
        if pairing_on_first_boot:
            station.later(self.pairing.start)

    @property
    def simulator(self) -> Simulator | None:
        return self.station.sim

    @property
    def ui_settings(self) -> UiSettings:
        ui = self.app.config.ui
        return UiSettings(
            idle_warn_s=ui.idle_warn_s,
            idle_clear_s=ui.idle_clear_s,
            language=ui.language,
            fullscreen=ui.fullscreen,
            width=ui.width,
            height=ui.height,
            touch_provider=ui.touch_provider,
            touch_device=ui.touch_device,
            touch_rotation=ui.touch_rotation,
            touch_invert_x=ui.touch_invert_x,
            touch_invert_y=ui.touch_invert_y,
            rotation=ui.rotation,
            panel_mm=(ui.panel_width_mm, ui.panel_height_mm),
            large_text=ui.large_text,
            technician_gesture_s=ui.technician_gesture_s,
            cache_dir=self.app.data_dir / "cache",
            log_dir=(self.app.data_dir / LOG_FILE).parent,
        )

    # ---- HQ's rules ------------------------------------------------------------------

    def follow_hq_rules(self) -> bool:
        """Puts HQ's rules in force if the agent stored a version other than the one in
        force here (one read of a meta value when nothing changed); True if it did.

        It runs at start and on every station poll. A rule set that cannot be read is logged
        and the rules in force stay: a customer is still served.
        """
        try:
            with self._rules_lock:
                before = self._rules_version
                self._rules_version = follow_stored_rules(self.app, before)
                return self._rules_version != before
        except Exception:
            log.exception("HQ's stored rules could not be read; the rules in force stay")
            return False

    def _on_poll(self) -> None:
        self.follow_hq_rules()
        self.pairing.poll()

    # ---- customers -------------------------------------------------------------------

    def identify(self, scanned: str) -> MemberView:
        return lookups.identify_at_kiosk(self.app, scanned)

    def identify_by_phone(self, phone: str, proof: str) -> MemberView:
        """The phone number, then the last four digits of the card or the birthday (MMDD);
        wrong answers lock the member out for a while (:mod:`edge.services.phone_proof`)."""
        return phone_proof.identify_by_phone(self.app, phone, proof)

    def check_in(self, card_no: str) -> BonusOutcome:
        bonus = points_service.check_in(self.app, card_no)
        return BonusOutcome(bonus.kind, bonus.points, bonus.balance, self._member(card_no))

    def claim_birthday_gift(self, card_no: str) -> BonusOutcome:
        bonus = points_service.claim_birthday_bonus(self.app, card_no)
        return BonusOutcome(bonus.kind, bonus.points, bonus.balance, self._member(card_no))

    def _member(self, card_no: str) -> MemberView:
        """The member as they are now, after what was just done with their card."""
        return member_service.show_member(self.app, card_no=card_no)

    def gifts(self) -> list[GiftTile]:
        return [gift_tile(self.app, line) for line in gift_service.list_gifts(self.app)]

    def redeem(self, card_no: str, sku: str, request_id: str) -> RedeemOutcome:
        result = gift_service.redeem_gift(self.app, card_no, sku, 1, request_id)
        member, printed = self._print_voucher(result)
        return RedeemOutcome(
            result.sku,
            result.name,
            result.qty,
            result.points,
            result.balance,
            printed,
            result.low_stock,
            member,
        )

    def _print_voucher(self, result: RedemptionResult) -> tuple[MemberView, PrintOutcome]:
        member = self._member(result.card_no)
        head = slips.header(self.app)
        vouchers = slips.gift_voucher(head, result, member, self.app.tz, self.station.columns)
        for voucher in vouchers:
            outcome = self.station.print_receipt(voucher)
            if not outcome.printed:
                return member, outcome
        return member, PrintOutcome(True)

    def print_statement(self, card_no: str) -> PrintOutcome:
        statement = slips.points_statement(
            slips.header(self.app), self._member(card_no), self.station.columns
        )
        return self.station.print_receipt(statement)

    def wallet(self, card_no: str) -> WalletView:
        wallet = coupons.wallet_for_card(self.app, card_no)
        names = self._gift_names()
        return WalletView(
            wallet.reachable, tuple(self._coupon_tile(c, names) for c in wallet.coupons)
        )

    def _gift_names(self) -> dict[str, str]:
        """What a gift coupon's SKU is called here (retired gifts too)."""
        return {g.sku: g.name for g in gift_service.list_gifts(self.app, include_inactive=True)}

    def _coupon_tile(self, coupon: WalletCoupon, gift_names: dict[str, str]) -> CouponTile:
        t = coupon.terms
        return CouponTile(
            coupon.coupon_id,
            t.title,
            t.kind,
            t.value_cents,
            t.threshold_cents,
            t.percent,
            gift_names.get(t.gift_sku, t.gift_sku),
            # the last day it can be used: valid_until is the first moment it cannot
            local_date(t.valid_until - timedelta(microseconds=1), self.app.tz),
            t.valid_from <= self.app.clock(),
        )

    def print_coupon(self, card_no: str, coupon_id: str) -> PrintOutcome:
        wallet = coupons.wallet_for_card(self.app, card_no)
        if not wallet.reachable:
            raise Refusal(
                "HQ cannot be asked now: the coupon cannot be printed", code="hq_unreachable"
            )
        found = next((c for c in wallet.coupons if c.coupon_id == coupon_id), None)
        if found is None:
            raise NotFound("this coupon was used or has ended", code="coupon_gone")
        names = self._gift_names()
        slip = slips.wallet_coupon(
            slips.header(self.app),
            self._coupon_tile(found, names),
            found.code,
            card_no,
            self.station.columns,
        )
        return self.station.print_receipt(slip)

    def register(self, new: NewMember, request_id: str) -> RegistrationOutcome:
        if new.title and new.title not in ("先生", "女士"):
            raise InvalidInput("a form of address is 先生 or 女士", code="bad_name")
        registration = member_service.register_member(
            self.app,
            new.phone,
            new.consent,
            name=f"{new.surname}{new.title}" if new.surname else None,
            birthday=new.birthday.isoformat() if new.birthday else None,
            referrer_phone=new.referrer_phone or None,
            request_id=request_id,
            actor="member",
            message_consent=new.message_consent,
        )
        member = registration.view
        card = self._hand_over(
            member,
            lambda dispensed: slips.new_card_slip(
                slips.header(self.app), member, 0, self.station.columns, dispensed
            ),
        )
        return RegistrationOutcome(member, registration.referral_bonus, card)

    def set_messages(self, card_no: str, on: bool) -> MemberView:
        return contact_service.set_message_consent(self.app, on, card_no=card_no)

    def _hand_over(self, member: MemberView, slip: Callable[[bool], Receipt]) -> CardIssue:
        """Dispenses the card; its slip prints either way. When no card came out (empty or
        jammed dispenser) the slip carries the card number as a QR and a barcode, so it
        serves as the member's card until one is collected at the service desk."""
        dispensed, problem = self.station.dispense_card()
        printed = self.station.print_receipt(slip(dispensed))
        return CardIssue(member.card_no or "", dispensed, problem, printed)

    def privacy_terms(self, language: str) -> tuple[str, str]:
        return self.app.config.privacy.consent_version, privacy_terms(language)

    # ---- staff -----------------------------------------------------------------------

    def staff_sign_in(self, staff_id: str, pin: str, permission: str) -> StaffSession:
        return self.sessions.sign_in(staff_id, pin, permission)

    def staff_sign_out(self, staff: StaffSession) -> None:
        self.sessions.sign_out(staff)

    def find_member(self, staff: StaffSession, phone: str) -> MemberView:
        identity = self.sessions.identity(staff, Permission.LOOKUP_MEMBER)
        return lookups.find_member_for_staff(self.app, identity, phone)

    def replace_lost_card(self, staff: StaffSession, card_no: str) -> ReplacementOutcome:
        """Blocks the old card (reported lost if still active) and issues the new one."""
        identity = self.sessions.identity(staff, Permission.REPLACE_CARD)
        change = desk.replace_lost_card(self.app, card_no, identity)
        new_card_no = change.new_card_no or ""
        member = self._member(new_card_no)
        card = self._hand_over(
            member,
            lambda dispensed: slips.replacement_slip(
                slips.header(self.app),
                member,
                change.card_no,
                change.balance,
                identity.staff_id,
                self.station.columns,
                dispensed,
            ),
        )
        return ReplacementOutcome(change.card_no, new_card_no, change.balance, member, card)

    def restock(self, staff: StaffSession, sku: str, qty: int) -> GiftTile:
        identity = self.sessions.identity(staff, Permission.RESTOCK)
        return gift_tile(self.app, gift_service.restock_gift(self.app, sku, qty, identity))

    def reprint_last_voucher(self, staff: StaffSession) -> PrintOutcome:
        identity = self.sessions.identity(staff, Permission.REPRINT_VOUCHER)
        result = gift_service.last_redemption(self.app)
        if result is None:
            raise NotFound("no voucher was printed here yet", code="no_redemption")
        _member, outcome = self._print_voucher(result)
        desk.record_voucher_reprint(self.app, identity, result.redemption_id, outcome.printed)
        return outcome

    def hand_over_gift(self, staff: StaffSession, voucher_code: str) -> GiftHandover:
        identity = self.sessions.identity(staff, Permission.HAND_OVER_GIFT)
        handover = vouchers.collect_voucher(self.app, voucher_code, identity)
        return GiftHandover(
            handover.name,
            handover.qty,
            mask_card(handover.card_no) if handover.card_no else "",
            handover.valid_until.isoformat() if handover.valid_until else "",
            handover.verified,
        )

    @property
    def approval_limit(self) -> int:
        return self.app.config.desk.adjust_approval_above

    def adjust_points(
        self,
        staff: StaffSession,
        card_no: str,
        points: int,
        reason: str,
        approver: tuple[str, str] | None = None,
    ) -> AdjustOutcome:
        identity = self.sessions.identity(staff, Permission.ADJUST_POINTS)
        approving = self._approver(approver)
        done = corrections.adjust_points(self.app, card_no, points, reason, "", identity, approving)
        return AdjustOutcome(
            done.points, done.reason, done.balance, done.approved_by, done.overdraft
        )

    def settle_overdraft(
        self,
        staff: StaffSession,
        card_no: str,
        how: str,
        approver: tuple[str, str] | None = None,
    ) -> AdjustOutcome:
        identity = self.sessions.identity(staff, Permission.ADJUST_POINTS)
        approving = self._approver(approver)
        # the screen has no keyboard: the note says where and how, the ledger who
        note = SETTLEMENT_NOTES.get(how, how)
        done = corrections.settle_overdraft(self.app, card_no, how, note, identity, approving)
        return AdjustOutcome(
            done.points, done.reason, done.balance, done.approved_by, done.overdraft
        )

    def _approver(self, approver: tuple[str, str] | None) -> StaffIdentity | None:
        """The supervisor whose staff number and PIN were typed, checked (None: nobody)."""
        if approver is None:
            return None
        return staff_service.authenticate_staff(
            self.app, approver[0], approver[1], Permission.APPROVE_ADJUSTMENT
        )

    def clear_faults(self, staff: StaffSession) -> list[DeviceStatus]:
        identity = self.sessions.identity(staff, Permission.CLEAR_FAULT)
        statuses = self.station.clear_faults()
        desk.record_faults_cleared(self.app, identity, {s.device: s.state for s in statuses})
        return statuses

    def daily_report(self, staff: StaffSession) -> DailyReport:
        """Today's figures (store-local day), printed for the desk."""
        identity = self.sessions.identity(staff, Permission.DAILY_REPORT)
        figures = desk.daily_figures(self.app, identity)
        printed = self.station.print_receipt(
            slips.daily_report(
                slips.header(self.app), figures, identity.staff_id, self.station.columns
            )
        )
        return DailyReport(figures, printed)

    # ---- technician ------------------------------------------------------------------

    def self_test(self) -> list[SelfTestLine]:
        return self.station.self_test()

    def technician_info(self) -> TechnicianInfo:
        return technician_info(self.app)

    def print_pairing_slip(self) -> PrintOutcome:
        """A fresh one-time pairing code with this device's certificate request, on a slip
        for HQ; it replaces any earlier code."""
        return self.pairing.print_slip()

    # ---- devices ---------------------------------------------------------------------

    def device_status(self) -> list[DeviceStatus]:
        return self.station.health()

    def on_scan(self, callback: Callable[[str], None]) -> None:
        self.station.on_scan(callback)

    def on_help_button(self, callback: Callable[[], None]) -> None:
        self.station.on_help_button(callback)

    def touch_feedback(self) -> None:
        self.station.feedback()

    def call_staff(self) -> None:
        self.station.call_staff()
        desk.record_help_request(self.app)

    def close(self) -> None:
        self.station.close()
        self.app.close()


def open_center(
    data_dir: Path | None = None,
    *,
    simulate: bool,
    receipts_dir: Path | None = None,
    config_path: Path | None = None,
    config: KioskConfig | None = None,
    pairing_on_first_boot: bool | None = None,
    health_poll_s: float = HEALTH_POLL_S,
    fps_window_s: float = FPS_WINDOW_S,
) -> KioskCenter:
    """Opens the ledger and the devices of this kiosk (the app's composition root calls it).

    ``pairing_on_first_boot`` (default: with real hardware, not ``simulate``) prints the
    pairing slip while the device is not provisioned; ``health_poll_s`` and ``fps_window_s``
    set how often the station re-reads its devices and over how long it counts the camera's
    frames for telemetry.
    """
    app = AppContext.open(data_dir, config_path, config=config)
    try:
        station = Station.open(
            app.config.hardware,
            app.data_dir,
            simulate=simulate,
            receipts_dir=receipts_dir,
            health_poll_s=health_poll_s,
            fps_window_s=fps_window_s,
        )
    except Exception:
        app.close()
        raise
    try:
        return KioskCenter(
            app,
            station,
            pairing_on_first_boot=not simulate
            if pairing_on_first_boot is None
            else pairing_on_first_boot,
        )
    except Exception:
        station.close()
        app.close()
        raise
