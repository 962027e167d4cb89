"""The station: every peripheral of one kiosk, opened from config, behind a few verbs.

Printing, dispensing and the self-test block for as long as the device takes (bounded by its
I/O timeout); callers run them off the UI thread. Each device is used by one thread at a
time (a lock per device), so a reprint never interleaves with a voucher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.config import HardwareConfig, PrinterConfig
from drivers.dispenser import CardDispenser, SerialDispenser, VirtualDispenserLink
from drivers.errors import DeviceError
from drivers.factory import open_devices, profile_for
from drivers.gpio import GpioPanel, SimulatedPanel
from drivers.health import Health
from drivers.printer import Receipt, ReceiptPrinter, SimulatedPrinter
from drivers.scanner import CodeScanner, SerialScanEngine, VirtualScanEngineLink
from edge.station.api import DeviceStatus, PrintOutcome, SelfTestLine

log = logging.getLogger(__name__)


def status_of(device: str, health: Health) -> DeviceStatus:
    return DeviceStatus(device, health.state.value, health.code, health.reason)


class SimulatedDevices:
    """The simulators with their hands: present a code, run out of paper, jam the dispenser.

    The scanner is a virtual scan engine (a code is presented as text, as a scan engine
    reports it); the printer keeps every receipt and, with ``output_dir``, a PNG of each.
    """

    def __init__(self, output_dir: Path | None, paper_mm: int = 80) -> None:
        self.scan_link = VirtualScanEngineLink()
        self.scanner = SerialScanEngine(self.scan_link)
        profile = profile_for(PrinterConfig(paper_mm=paper_mm))
        self.printer = SimulatedPrinter(profile, output_dir=output_dir)
        self.dispenser_link = VirtualDispenserLink()
        self.dispenser = SerialDispenser(self.dispenser_link, 1.0)
        self.panel = SimulatedPanel()

    # Simulator protocol
    def present_code(self, text: str) -> None:
        self.scan_link.present(text)

    def printer_out_of_paper(self) -> None:
        self.printer.paper_dots = 0

    def dispenser_jam(self) -> None:
        self.dispenser_link.jam_next = True

    def dispenser_empty(self) -> None:
        self.dispenser_link.cards = 0

    def take_card(self) -> None:
        self.dispenser_link.take_card()

    def press_help(self) -> None:
        self.panel.press_key("h")

    def customer_takes_card_later(self, after_s: float = 0.5) -> None:
        """A simulated customer takes the dispensed card from the mouth a moment later."""
        timer = threading.Timer(after_s, self.dispenser_link.take_card)
        timer.daemon = True
        timer.start()

    def receipts(self) -> list[str]:
        return [r.title for r in self.printer.printed]

    # what a person does when a staff member clears a fault on the simulators
    def service(self) -> None:
        self.printer.paper_dots = None
        if self.dispenser_link.cards == 0:
            self.dispenser_link.cards = 50
        self.dispenser_link.take_card()


@dataclass
class Station:
    """Scanner, printer, dispenser and GPIO panel of this kiosk."""

    scanner: CodeScanner
    printer: ReceiptPrinter
    dispenser: CardDispenser
    panel: GpioPanel
    backends: dict[str, str]
    sim: SimulatedDevices | None = None

    def __post_init__(self) -> None:
        self._print_lock = threading.Lock()
        self._dispense_lock = threading.Lock()
        self._stop = threading.Event()
        self._scan_thread: threading.Thread | None = None
        self._scan_callbacks: list[Callable[[str], None]] = []

    @classmethod
    def open(
        cls, hardware: HardwareConfig, *, simulate: bool, receipts_dir: Path | None = None
    ) -> Station:
        """Opens the configured devices; ``simulate`` uses simulators whatever the config says."""
        if simulate:
            sim = SimulatedDevices(receipts_dir, hardware.printer.paper_mm)
            return cls(
                sim.scanner,
                sim.printer,
                sim.dispenser,
                sim.panel,
                dict.fromkeys(("scanner", "printer", "dispenser", "gpio"), "sim"),
                sim,
            )
        devices = open_devices(hardware)
        return cls(
            devices.scanner,
            devices.printer,
            devices.dispenser,
            devices.panel,
            {
                "scanner": hardware.scanner.backend,
                "printer": hardware.printer.backend,
                "dispenser": hardware.dispenser.backend,
                "gpio": hardware.gpio.backend,
            },
        )

    @property
    def columns(self) -> int:
        return self.printer.profile.columns

    def print_receipt(self, receipt: Receipt) -> PrintOutcome:
        """Prints and says whether it worked; a fault is reported, never raised."""
        with self._print_lock:
            self.panel.show("busy")
            try:
                self.printer.print_receipt(receipt)
            except DeviceError as exc:
                log.warning("printer: %s (%s)", exc.health.reason, receipt.title)
                self.panel.show("fault")
                return PrintOutcome(False, exc.health.code or "printer_error")
            self.panel.show("ready")
            return PrintOutcome(True)

    def dispense_card(self) -> tuple[bool, str]:
        """Moves a card to the mouth: (True, "") or (False, fault code)."""
        with self._dispense_lock:
            try:
                self.dispenser.dispense()
            except DeviceError as exc:
                log.warning("dispenser: %s", exc.health.reason)
                return False, exc.health.code or "dispenser_error"
            if self.sim is not None:
                self.sim.customer_takes_card_later()
            return True, ""

    def clear_faults(self) -> list[DeviceStatus]:
        """A staff member cleared the paper path or the card path: reset and re-read health."""
        if self.sim is not None:
            self.sim.service()
        reset = getattr(self.dispenser, "reset", None)
        if callable(reset):
            try:
                reset()
            except DeviceError as exc:
                log.warning("dispenser reset: %s", exc.health.reason)
        statuses = self.health()
        self.panel.show("ready" if all(s.ok for s in statuses) else "fault")
        return statuses

    def health(self) -> list[DeviceStatus]:
        return [
            status_of("scanner", self.scanner.health()),
            status_of("printer", self.printer.health()),
            status_of("dispenser", self.dispenser.health()),
            status_of("gpio", self.panel.health()),
        ]

    def self_test(self) -> list[SelfTestLine]:
        """Exercises the open devices (the serial ports stay ours, so no second open)."""
        lines = []

        def run(device: str, check: Callable[[], tuple[Health, str]]) -> None:
            start = time.perf_counter()
            try:
                health, detail = check()
            except DeviceError as exc:
                health, detail = exc.health, ""
            except Exception as exc:  # the self-test reports every failure, whatever its type
                health, detail = Health.failed("error", f"{type(exc).__name__}: {exc}"), ""
            ms = (time.perf_counter() - start) * 1000
            lines.append(
                SelfTestLine(
                    device,
                    self.backends[device],
                    health.state.value,
                    health.code,
                    detail or health.reason,
                    round(ms, 1),
                )
            )

        def printer() -> tuple[Health, str]:
            status = self.printer.status()
            profile = self.printer.profile
            detail = f"{profile.name}, paper {status.paper}, cover open {status.cover_open}"
            return status.health(), detail

        def dispenser() -> tuple[Health, str]:
            status = self.dispenser.status()
            detail = f"card at mouth {status.card_at_mouth}, low {status.low}, empty {status.empty}"
            return status.health(), detail

        def gpio() -> tuple[Health, str]:
            self.panel.beep(0.05)
            return self.panel.health(), f"door open {self.panel.door_open}"

        run("scanner", lambda: (self.scanner.health(), ""))
        run("printer", printer)
        run("dispenser", dispenser)
        run("gpio", gpio)
        return lines

    def feedback(self) -> None:
        """A short beep for a touch (the buzzer runs in the background)."""
        self.panel.beep(0.03)

    def call_staff(self) -> None:
        self.panel.beep(0.2, times=3)

    def on_help_button(self, callback: Callable[[], None]) -> None:
        self.panel.on_help(callback)

    def on_scan(self, callback: Callable[[str], None]) -> None:
        """Delivers every code read to ``callback`` on the scanner thread."""
        self._scan_callbacks.append(callback)
        if self._scan_thread is None:
            self._scan_thread = threading.Thread(
                target=self._scan_loop, name="station-scan", daemon=True
            )
            self._scan_thread.start()

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            try:
                code = self.scanner.read_code(0.25)
            except DeviceError as exc:
                log.warning("scanner: %s", exc.health.reason)
                self._stop.wait(1.0)
                continue
            if code is None:
                continue
            for callback in list(self._scan_callbacks):
                try:
                    callback(code.text)
                except Exception:
                    log.exception("scan callback failed")

    def close(self) -> None:
        self._stop.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout=2.0)
        for device in (self.scanner, self.printer, self.dispenser, self.panel):
            try:
                device.close()
            except Exception:
                log.exception("closing %s", type(device).__name__)
