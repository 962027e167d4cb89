"""The member center for the touchscreen: services and devices behind :class:`MemberCenter`.

Each method is one thing a person does at the kiosk: it calls the use cases, prints or
dispenses what goes with it, and answers in the plain values of :mod:`edge.station.api`.
A device fault after a committed change is reported in the answer (the points are
redeemed; the voucher did not print), never raised as if nothing had happened.

HQ's points and offline rules reach this process through the database: the sync agent (a
separate process) stores each push, and the center puts the stored rules in force at start
and on every station poll (:func:`edge.sync.inbound.follow_stored_rules`), so a rule HQ
pushes applies here without a restart, within one poll. (The gift catalogue is read from the
database on every use.)

On first boot (not yet provisioned, real hardware) the center prints the pairing slip the
technician takes to HQ, once: a restart while that pairing is pending and unexpired prints no
other code, unless its slip never came out of the printer.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from drivers.printer import Receipt
from edge import __version__
from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.cards import CardState, require_usable
from edge.domain.errors import InvalidInput, NotFound, PermissionDenied, Refusal
from edge.domain.points import local_date
from edge.domain.staff import Permission
from edge.security.personal import mask_phone, normalize_phone
from edge.services import cards as card_service
from edge.services import gifts as gift_service
from edge.services import members as member_service
from edge.services import phone_proof
from edge.services import points as points_service
from edge.services.staff import StaffIdentity, authenticate_staff, require
from edge.services.status import audit_log, center_status
from edge.services.tx import get_meta, set_meta, transaction
from edge.station import slips
from edge.station.api import (
    BonusOutcome,
    CardIssue,
    DailyReport,
    DeviceStatus,
    ExpiringPoints,
    GiftTile,
    HistoryItem,
    MemberSummary,
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
)
from edge.station.devices import FPS_WINDOW_S, HEALTH_POLL_S, Station
from edge.station.monitoring import PeripheralLog
from edge.station.privacy import privacy_terms
from edge.storage.models import Card, Member
from edge.sync.inbound import follow_stored_rules

log = logging.getLogger(__name__)

STAFF_SESSION_TTL = timedelta(minutes=15)
LOG_FILE = "logs/kiosk.log"
# the code digest of a pairing whose first-boot slip did not print (printed again at start)
PAIRING_UNPRINTED = "station.pairing_unprinted"


def latest_card(app: AppContext, member_id: str) -> tuple[str, str] | None:
    """The member's newest card that is not yet replaced (active, lost or blocked)."""
    with app.db.read() as session:
        row = session.execute(
            select(Card.card_no, Card.state)
            .where(Card.member_id == member_id, Card.state != CardState.REPLACED)
            .order_by(Card.issued_at.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


def summary(
    app: AppContext, view: member_service.MemberView, card: tuple[str, str] | None = None
) -> MemberSummary:
    """A member view as the screen shows it (dates in the store's timezone)."""
    ladder = {t.code: t for t in app.ladder}
    upcoming = ladder.get(view.next_tier) if view.next_tier else None
    return MemberSummary(
        card_no=card[0] if card else view.card_no or "",
        card_state=card[1] if card else view.card_state or "",
        phone_masked=view.phone_masked,
        name_masked=view.name_masked,
        tier=view.tier,
        tier_name_zh=view.tier_name_zh,
        tier_name_en=view.tier_name_en,
        balance=view.balance,
        available=view.available,
        pending=view.pending,
        expiring=tuple(ExpiringPoints(x.points, x.expires_on) for x in view.expiring),
        next_tier_name_zh=upcoming.name_zh if upcoming else "",
        next_tier_name_en=upcoming.name_en if upcoming else "",
        next_tier_missing=view.next_tier_missing,
        tier_basis=view.tier_basis,
        birthday_month=view.birthday_month,
        birthday_bonus_claimed=view.birthday_bonus_claimed,
        checked_in_today=view.checked_in_today,
        history=tuple(
            HistoryItem(h.at.astimezone(app.tz).date(), h.kind, h.points) for h in view.history
        ),
    )


def gift_tile(line: gift_service.GiftLine) -> GiftTile:
    return GiftTile(
        line.sku,
        line.name,
        line.kind,
        line.points_price,
        line.stock,
        line.is_low,
        line.coupon_value_cents,
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
        self._staff: dict[str, tuple[StaffIdentity, datetime]] = {}
        self._lock = threading.Lock()
        self._rules_lock = threading.Lock()
        self._rules_version = 0  # the stored rules version in force here; 0: none
        self._pairing_due = False
        self.follow_hq_rules()
        station.monitor(PeripheralLog(app), on_poll=self._on_poll)
        if pairing_on_first_boot:
            station.later(self._first_boot_pairing)

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
        if self._pairing_due:
            self._print_first_slip()

    # ---- customers -------------------------------------------------------------------

    def _audit_lookup(self, view: member_service.MemberView, channel: str) -> None:
        with transaction(self.app) as tx:
            tx.audit("member", "member.lookup", view.member_id, channel=channel)

    def identify(self, scanned: str) -> MemberSummary:
        view = member_service.identify(self.app, scanned)
        self._audit_lookup(view, "scan")
        return summary(self.app, view)

    def identify_by_phone(self, phone: str, proof: str) -> MemberSummary:
        """The phone number, then the last four digits of the card or the birthday (MMDD).

        Three wrong answers within ten minutes lock that member out of phone identification
        at this kiosk for ten minutes (:mod:`edge.services.phone_proof`), so the four digits
        cannot be guessed at the screen, not even across a restart.
        """
        phone_n = normalize_phone(phone)
        try:
            view = member_service.show_member(self.app, phone=phone_n)
        except NotFound:
            raise NotFound(
                f"no member with phone {mask_phone(phone_n)}", code="unknown_phone"
            ) from None
        if view.card_no is None or view.card_state is None:
            raise Refusal("this membership has no active card", code="card_lost")
        require_usable(view.card_no, view.card_state)
        phone_proof.check_not_locked(self.app, view.member_id)
        with self.app.db.read() as session:
            birthday = session.scalar(select(Member.birthday).where(Member.id == view.member_id))
        answers = {view.card_no[-4:]}
        if birthday is not None:
            answers.add(birthday.strftime("%m%d"))
        if proof.strip() not in answers:
            if phone_proof.record_wrong_answer(self.app, view.member_id):
                raise Refusal(phone_proof.LOCKED_MESSAGE, code="verify_locked")
            raise Refusal("the verification digits do not match", code="verify_failed")
        self._audit_lookup(view, "phone")
        return summary(self.app, view)

    def refresh(self, card_no: str) -> MemberSummary:
        view = member_service.show_member(self.app, card_no=card_no)
        if view.card_state is not None and view.card_no is not None:
            require_usable(view.card_no, view.card_state)
        return summary(self.app, view)

    def check_in(self, card_no: str) -> BonusOutcome:
        bonus = points_service.check_in(self.app, card_no)
        return BonusOutcome(bonus.kind, bonus.points, bonus.balance)

    def claim_birthday_gift(self, card_no: str) -> BonusOutcome:
        bonus = points_service.claim_birthday_bonus(self.app, card_no)
        return BonusOutcome(bonus.kind, bonus.points, bonus.balance)

    def gifts(self) -> list[GiftTile]:
        return [gift_tile(line) for line in gift_service.list_gifts(self.app)]

    def redeem(self, card_no: str, sku: str, request_id: str) -> RedeemOutcome:
        result = gift_service.redeem_gift(self.app, card_no, sku, 1, request_id)
        view = member_service.show_member(self.app, card_no=card_no)
        printed = self._print_all(
            slips.gift_voucher(self.app, result, view.phone_masked, self.station.columns)
        )
        return RedeemOutcome(
            result.sku,
            result.name,
            result.qty,
            result.points,
            result.balance,
            printed,
            result.low_stock,
        )

    def _print_all(self, receipts: list[Receipt]) -> PrintOutcome:
        for receipt in receipts:
            outcome = self.station.print_receipt(receipt)
            if not outcome.printed:
                return outcome
        return PrintOutcome(True)

    def print_statement(self, card_no: str) -> PrintOutcome:
        view = member_service.show_member(self.app, card_no=card_no)
        return self.station.print_receipt(
            slips.points_statement(self.app, view, self.station.columns)
        )

    def register(self, new: NewMember, request_id: str) -> RegistrationOutcome:
        if new.title and new.title not in ("先生", "女士"):
            raise InvalidInput("a form of address is 先生 or 女士", code="bad_name")
        name = f"{new.surname}{new.title}" if new.surname else None
        registration = member_service.register_member(
            self.app,
            new.phone,
            new.consent,
            name=name,
            birthday=new.birthday.isoformat() if new.birthday else None,
            referrer_phone=new.referrer_phone or None,
            request_id=request_id,
            actor="member",
        )
        card = self._hand_over(
            registration.view,
            lambda dispensed: slips.new_card_slip(
                self.app, registration.view, 0, self.station.columns, dispensed
            ),
        )
        return RegistrationOutcome(
            summary(self.app, registration.view), registration.referral_bonus, card
        )

    def _hand_over(
        self, view: member_service.MemberView, slip: Callable[[bool], Receipt]
    ) -> CardIssue:
        """Dispenses the card; its slip prints either way. When no card came out (empty or
        jammed dispenser) the slip carries the card number as a QR and a barcode, so it
        serves as the member's card until one is collected at the service desk."""
        dispensed, problem = self.station.dispense_card()
        printed = self.station.print_receipt(slip(dispensed))
        return CardIssue(view.card_no or "", dispensed, problem, printed)

    def privacy_terms(self, language: str) -> tuple[str, str]:
        return self.app.config.privacy.consent_version, privacy_terms(language)

    # ---- staff -----------------------------------------------------------------------

    def staff_sign_in(self, staff_id: str, pin: str, permission: str) -> StaffSession:
        identity = authenticate_staff(self.app, staff_id, pin, Permission(permission))
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._staff[token] = (identity, self.app.clock() + STAFF_SESSION_TTL)
        return StaffSession(identity.staff_id, identity.role, token)

    def staff_sign_out(self, staff: StaffSession) -> None:
        with self._lock:
            self._staff.pop(staff.token, None)

    def _identity(self, staff: StaffSession, permission: Permission) -> StaffIdentity:
        with self._lock:
            held = self._staff.get(staff.token)
            if held is None or held[1] <= self.app.clock():
                self._staff.pop(staff.token, None)
                raise PermissionDenied("please sign in again", code="staff_session_expired")
        identity = held[0]
        require(identity, permission)
        return identity

    def find_member(self, staff: StaffSession, phone: str) -> MemberSummary:
        identity = self._identity(staff, Permission.LOOKUP_MEMBER)
        view = member_service.show_member(self.app, phone=phone)
        with transaction(self.app) as tx:
            tx.audit(identity.staff_id, "member.lookup", view.member_id, channel="staff")
        return summary(self.app, view, latest_card(self.app, view.member_id))

    def replace_lost_card(self, staff: StaffSession, card_no: str) -> ReplacementOutcome:
        """Blocks the old card (reported lost if still active) and issues the new one."""
        identity = self._identity(staff, Permission.REPLACE_CARD)
        before = member_service.show_member(self.app, card_no=card_no)
        if before.card_state == CardState.ACTIVE:
            card_service.report_lost_card(self.app, card_no, identity)
        change = card_service.replace_card(self.app, card_no, identity)
        assert change.new_card_no is not None
        view = member_service.show_member(self.app, card_no=change.new_card_no)
        card = self._hand_over(
            view,
            lambda dispensed: slips.replacement_slip(
                self.app,
                view,
                change.card_no,
                change.new_card_no or "",
                change.balance,
                identity.staff_id,
                self.station.columns,
                dispensed,
            ),
        )
        return ReplacementOutcome(
            change.card_no, change.new_card_no, change.balance, change.phone_masked, card
        )

    def restock(self, staff: StaffSession, sku: str, qty: int) -> GiftTile:
        identity = self._identity(staff, Permission.RESTOCK)
        return gift_tile(gift_service.restock_gift(self.app, sku, qty, identity))

    def reprint_last_voucher(self, staff: StaffSession) -> PrintOutcome:
        identity = self._identity(staff, Permission.REPRINT_VOUCHER)
        result = gift_service.last_redemption(self.app)
        if result is None:
            raise NotFound("no voucher was printed here yet", code="no_redemption")
        view = member_service.show_member(self.app, card_no=result.card_no)
        outcome = self._print_all(
            slips.gift_voucher(self.app, result, view.phone_masked, self.station.columns)
        )
        with transaction(self.app) as tx:
            tx.audit(
                identity.staff_id,
                "gift.reprint_voucher",
                result.redemption_id,
                printed=outcome.printed,
            )
        return outcome

    def clear_faults(self, staff: StaffSession) -> list[DeviceStatus]:
        identity = self._identity(staff, Permission.CLEAR_FAULT)
        statuses = self.station.clear_faults()
        with transaction(self.app) as tx:
            tx.audit(
                identity.staff_id,
                "device.clear_fault",
                self.app.device_id,
                **{s.device: s.state for s in statuses},
            )
        return statuses

    def daily_report(self, staff: StaffSession) -> DailyReport:
        """Today's counts (store-local day) from the audit log, printed for the desk."""
        identity = self._identity(staff, Permission.DAILY_REPORT)
        now = self.app.clock()
        today = local_date(now, self.app.tz)
        start = datetime.combine(today, datetime.min.time(), self.app.tz)
        lines = audit_log(self.app, since=start, limit=100_000)

        def count(action: str) -> int:
            return sum(1 for line in lines if line.action == action)

        redeemed = [line for line in lines if line.action == "gift.redeem"]
        low = tuple((g.name, g.stock) for g in gift_service.list_gifts(self.app) if g.is_low)
        report = DailyReport(
            business_date=today,
            registrations=count("member.register"),
            lookups=count("member.lookup"),
            redemptions=len(redeemed),
            points_redeemed=sum(int(str(line.detail.get("points", 0))) for line in redeemed),
            cards_replaced=count("card.replace"),
            low_stock=low,
            printout=PrintOutcome(False),
        )
        printed = self.station.print_receipt(
            slips.daily_report(self.app, report, identity.staff_id, self.station.columns)
        )
        return DailyReport(
            report.business_date,
            report.registrations,
            report.lookups,
            report.redemptions,
            report.points_redeemed,
            report.cards_replaced,
            report.low_stock,
            printed,
        )

    # ---- technician ------------------------------------------------------------------

    def self_test(self) -> list[SelfTestLine]:
        return self.station.self_test()

    def print_pairing_slip(self) -> PrintOutcome:
        """A fresh one-time pairing code with this device's certificate request, on a slip
        for HQ (as ``kiosk provision pairing-slip`` prints it); it replaces any earlier code."""
        from edge.provisioning.bundle import code_digest
        from edge.provisioning.pairing import pairing_slip, start_pairing

        now = self.app.clock()
        request = start_pairing(self.app.data_dir, now=now)
        printed_at = now.astimezone(self.app.tz).strftime("%Y-%m-%d %H:%M")
        outcome = self.station.print_receipt(pairing_slip(request, printed_at))
        if outcome.printed:
            log.info("pairing slip printed for serial %s", request.serial)
        else:
            log.warning("pairing slip for serial %s did not print: %s", request.serial, outcome)
        self._note_unprinted("" if outcome.printed else code_digest(request.code))
        return outcome

    def _note_unprinted(self, digest: str) -> None:
        try:
            with self.app.db.write() as session:
                if (get_meta(session, PAIRING_UNPRINTED) or "") != digest:
                    set_meta(session, PAIRING_UNPRINTED, digest)
        except Exception:
            log.exception("could not note whether the pairing slip printed")

    def _first_boot_pairing(self) -> None:
        """On the station's worker at start: a device not yet provisioned prints its slip,
        unless a pairing is pending whose slip already came out."""
        from edge.provisioning.enrolment import is_provisioned

        if is_provisioned(self.app.data_dir, self._database_path()):
            return
        pending = _pending_pairing(self.app.data_dir, self.app.clock())
        if pending is not None:
            with self.app.db.read() as session:
                unprinted = get_meta(session, PAIRING_UNPRINTED) or ""
            if pending != unprinted:
                log.info("not provisioned; the pairing slip printed earlier is still valid")
                return
        self._pairing_due = True
        self._print_first_slip()

    def _print_first_slip(self) -> None:
        from edge.provisioning.enrolment import is_provisioned

        if is_provisioned(self.app.data_dir, self._database_path()):
            self._pairing_due = False
            return
        if not self.station.printer_health().ok:
            return  # a new code only when it can come out; the poll tries again
        self._pairing_due = not self.print_pairing_slip().printed

    def technician_info(self) -> TechnicianInfo:
        status = center_status(self.app)
        sync = self.app.config.sync
        reachable = _probe(sync.broker_host, sync.broker_port) if sync.enabled else None
        keys_dir = (
            Path(self.app.config.security.keys_dir)
            if self.app.config.security.keys_dir
            else self.app.data_dir / "keys"
        )
        device = self.app.config.device
        return TechnicianInfo(
            version=__version__,
            store_id=status.store_id,
            device_id=status.device_id,
            data_dir=status.data_dir,
            config_file=str(self.app.config_path),
            config_present=self.app.config_path.exists(),
            keys_present=keys_dir.is_dir() and any(keys_dir.iterdir()),
            card_range=f"{device.card_range_start}-{device.card_range_end}",
            sync_enabled=sync.enabled,
            broker=f"{sync.broker_host}:{sync.broker_port}",
            broker_reachable=reachable,
            offline=status.offline,
            hq_last_contact=status.hq_last_contact,
            outbox_pending=status.outbox_pending,
            members=status.members,
            log_tail=tuple(_tail(self.app.data_dir / LOG_FILE, 40)),
        )

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
        with transaction(self.app) as tx:
            tx.audit("member", "help.requested", self.app.device_id)

    def _database_path(self) -> Path | None:
        """The SQLite file the ledger is in (the provisioning check reads it on its own)."""
        name = self.app.db.engine.url.database
        return Path(name) if name else None

    def close(self) -> None:
        self.station.close()
        self.app.close()


def _pending_pairing(data_dir: Path, now: datetime) -> str | None:
    """The code digest of the pairing request waiting for HQ's bundle, if it has not expired."""
    from edge.provisioning.pairing import pending_pairing

    pending = pending_pairing(data_dir)
    return pending.code_sha256 if pending is not None and pending.expires_at > now else None


def _probe(host: str, port: int, timeout_s: float = 1.0) -> bool:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        log.info("broker %s:%s unreachable after %.2fs", host, port, time.monotonic() - start)
        return False


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


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
