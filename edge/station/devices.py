"""The station: every peripheral of one kiosk, opened from config, behind a few verbs.

Printing, dispensing and the self-test block for as long as the device takes (bounded by its
I/O timeout); callers run them off the UI thread. Each device is used by one thread at a
time (a lock per device), so a reprint never interleaves with a voucher.

The station also keeps what the agent's telemetry reports (:mod:`edge.station.monitoring`):
devices' health whenever it is read (the screen's fault banner reads it every few seconds; at
start, after a self-test and on fault clearing; and on the station's poll every
:data:`HEALTH_POLL_S` when nobody read it in that time); the time of the last scan and
successful print (kept in memory, written on that poll); the camera's frame rate, counted over
:data:`FPS_WINDOW_S`. Those records are written by the station's own worker thread, so a slow
or failing database never holds up a customer or the scanner.

A print or a dispense holds the update lock (:func:`edge.lifecycle.busy.hold`): an update
waits for it to finish before it stops the app, and while an update holds the lock a new one
waits a few seconds, then is refused with the fault code ``updating``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from drivers.config import DispenserConfig, GpioConfig, HardwareConfig, ScannerConfig
from drivers.dispenser import CardDispenser
from drivers.errors import DeviceError
from drivers.factory import Devices, Simulators, open_devices
from drivers.gpio import GpioPanel
from drivers.health import Health, HealthState
from drivers.printer import Receipt, ReceiptPrinter
from drivers.scanner import CodeScanner
from drivers.selftest import check_hardware
from edge.lifecycle import busy
from edge.station.api import DeviceStatus, PrintOutcome, SelfTestLine
from edge.station.monitoring import PeripheralLog

log = logging.getLogger(__name__)
UPDATING = "updating"  # the fault code of work refused while an update holds the lock
HOLD_TIMEOUT_S = 3.0
HEALTH_POLL_S = 30.0  # the station's poll: its hooks run, health is read if nobody did
FPS_WINDOW_S = 60.0  # the camera's frames are counted over this long, then recorded
STOP_TIMEOUT_S = 5.0


def status_of(device: str, health: Health) -> DeviceStatus:
    return DeviceStatus(device, health.state.value, health.code, health.reason)


def simulated(hardware: HardwareConfig, receipts_dir: Path | None) -> HardwareConfig:
    """``hardware`` with every device simulated: the scanner a scan engine (codes presented
    as text), the printer keeping a PNG of each receipt in ``receipts_dir``."""
    return hardware.model_copy(
        update={
            "scanner": ScannerConfig(backend="sim-serial"),
            "printer": hardware.printer.model_copy(
                update={"backend": "sim", "sim_output": str(receipts_dir or "")}
            ),
            "dispenser": DispenserConfig(backend="sim", timeout_s=1.0),
            "gpio": GpioConfig(backend="sim"),
        }
    )


class SimulatedDevices:
    """Hands for the simulators: present a code, run out of paper, jam the dispenser.

    A thin layer over the far sides the driver factory hands out (:class:`Simulators`), in
    the words of :class:`edge.station.api.Simulator`.
    """

    def __init__(self, sim: Simulators) -> None:
        if not (sim.complete and sim.scan_engine and sim.printer and sim.dispenser and sim.panel):
            raise ValueError("every device must be simulated")
        self.scan_link = sim.scan_engine
        self.printer = sim.printer
        self.dispenser_link = sim.dispenser
        self.panel = sim.panel

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
        self.printer.load_paper()
        if self.dispenser_link.cards == 0:
            self.dispenser_link.cards = 50
        self.dispenser_link.take_card()


@dataclass
class Station:
    """Scanner, printer, dispenser and GPIO panel of this kiosk."""

    devices: Devices
    hardware: HardwareConfig
    data_dir: Path
    sim: SimulatedDevices | None = None
    hold_timeout_s: float = HOLD_TIMEOUT_S
    health_poll_s: float = HEALTH_POLL_S
    fps_window_s: float = FPS_WINDOW_S

    def __post_init__(self) -> None:
        self._records: PeripheralLog | None = None
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._poll_hooks: list[Callable[[], None]] = []
        self._printer_seen = DeviceStatus("printer", HealthState.OK)
        self._health_read_at: float | None = None  # time.monotonic() of the last health()
        self._print_lock = threading.Lock()
        self._dispense_lock = threading.Lock()
        self._stop = threading.Event()
        self._scan_thread: threading.Thread | None = None
        self._scan_callbacks: list[Callable[[str], None]] = []
        self.scanner: CodeScanner = self.devices.scanner
        self.printer: ReceiptPrinter = self.devices.printer
        self.dispenser: CardDispenser = self.devices.dispenser
        self.panel: GpioPanel = self.devices.panel

    @classmethod
    def open(
        cls,
        hardware: HardwareConfig,
        data_dir: Path,
        *,
        simulate: bool,
        receipts_dir: Path | None = None,
        health_poll_s: float = HEALTH_POLL_S,
        fps_window_s: float = FPS_WINDOW_S,
    ) -> Station:
        """Opens the configured devices; ``simulate`` uses simulators whatever the config says.

        When every device is simulated (``simulate``, or a config that says ``sim`` and
        ``sim-serial`` throughout) the station has hands for them (:attr:`sim`).
        """
        if simulate:
            hardware = simulated(hardware, receipts_dir)
        devices = open_devices(hardware)
        hands = SimulatedDevices(devices.sim) if devices.sim.complete else None
        return cls(
            devices,
            hardware,
            data_dir,
            hands,
            health_poll_s=health_poll_s,
            fps_window_s=fps_window_s,
        )

    # ---- the station's worker: telemetry records, health polls, background work ------

    def monitor(self, records: PeripheralLog, on_poll: Callable[[], None] | None = None) -> None:
        """Starts recording for telemetry: devices' health now and whenever it is read, and
        runs ``on_poll`` on every poll (on the station's worker thread, never the caller's)."""
        self._records = records
        if on_poll is not None:
            self._poll_hooks.append(on_poll)
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="station-worker", daemon=True)
            self._worker.start()
        self.later(self.health)

    def later(self, job: Callable[[], object]) -> None:
        """Runs ``job`` on the station's worker thread (inline if the station has none)."""
        if self._worker is None:
            self._run(job)
        elif not self._stop.is_set():
            self._jobs.put(job)

    def flush(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Waits until the work queued so far is done; False if it took over ``timeout_s``."""
        if self._worker is None:
            return True
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout_s)

    def poll(self) -> None:
        """One poll: reads the devices' health, writes the last scan and print noted since
        the last poll, and runs the poll hooks."""
        self._poll(read_health=True)

    def _poll(self, *, read_health: bool) -> None:
        if read_health:
            self._run(self.health)
        records = self._records
        if records is not None:
            records.write_activity()
        for hook in list(self._poll_hooks):
            self._run(hook)

    def _health_due(self, now: float) -> bool:
        """True when nobody read the devices' health within :attr:`health_poll_s`."""
        read_at = self._health_read_at
        return read_at is None or now - read_at >= self.health_poll_s

    def _work(self) -> None:
        next_poll = time.monotonic() + self.health_poll_s
        while True:
            now = time.monotonic()
            if next_poll <= now:
                self._poll(read_health=self._health_due(now))
                next_poll = time.monotonic() + self.health_poll_s
                continue
            wait = next_poll - now
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:
                continue
            if job is None:
                return
            self._run(job)

    @staticmethod
    def _run(job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:
            log.exception("station background work failed")

    def _record_fps(self, fps: float) -> None:
        records = self._records
        if records is not None:
            self.later(lambda: records.camera_fps(fps))

    def _noted(self, note: Callable[[PeripheralLog, datetime], None]) -> None:
        records = self._records
        if records is not None:
            note(records, records.now())  # in memory; written on the next poll

    # ---- the devices ---------------------------------------------------------------

    @property
    def columns(self) -> int:
        return self.printer.profile.columns

    def print_receipt(self, receipt: Receipt) -> PrintOutcome:
        """Prints and says whether it worked; a fault is reported, never raised."""
        try:
            with busy.hold(f"printing {receipt.title}", self.data_dir, timeout=self.hold_timeout_s):
                outcome = self._print(receipt)
        except busy.LockTimeout:
            log.info("not printing %s: an update is running", receipt.title)
            return PrintOutcome(False, UPDATING)
        if outcome.printed:
            self._noted(PeripheralLog.printed)
        return outcome

    def _print(self, receipt: Receipt) -> PrintOutcome:
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
        try:
            with busy.hold("dispensing a card", self.data_dir, timeout=self.hold_timeout_s):
                result = self._dispense()
        except busy.LockTimeout:
            log.info("not dispensing: an update is running")
            return False, UPDATING
        return result

    def _dispense(self) -> tuple[bool, str]:
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
        try:
            self.dispenser.reset()
        except DeviceError as exc:
            log.warning("dispenser reset: %s", exc.health.reason)
        statuses = self.health()
        self.panel.show("ready" if all(s.ok for s in statuses) else "fault")
        return statuses

    def health(self) -> list[DeviceStatus]:
        """Every device's health, read now; a change is recorded for telemetry (on the
        worker, so the caller never waits for the database)."""
        statuses = [
            status_of("scanner", self.scanner.health()),
            self.printer_health(),
            status_of("dispenser", self.dispenser.health()),
            status_of("gpio", self.panel.health()),
        ]
        self._health_read_at = time.monotonic()
        records = self._records
        if records is not None:
            if threading.current_thread() is self._worker:
                records.devices(statuses)  # the worker's own read: done before its next job
            else:
                self.later(lambda: records.devices(statuses))
        return statuses

    def printer_health(self) -> DeviceStatus:
        """The printer's status; while it prints, the status it last gave (asking it then
        would interleave the status query with the receipt's bytes)."""
        if not self._print_lock.acquire(blocking=False):
            return self._printer_seen
        try:
            self._printer_seen = status_of("printer", self.printer.health())
        finally:
            self._print_lock.release()
        return self._printer_seen

    def self_test(self) -> list[SelfTestLine]:
        """The drivers' self-test on the devices held open (the serial ports stay ours)."""
        lines = [
            SelfTestLine(
                r.device,
                r.backend,
                r.health.state.value,
                r.health.code,
                r.detail or r.health.reason,
                round(r.ms, 1),
            )
            for r in check_hardware(self.hardware, self.devices)
        ]
        # what the self-test found, as health reads it (the self-test's own lines carry
        # details and checks the health poll does not, and would flap against it)
        self.later(self.health)
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
        rate = FrameRate(self.scanner.frame_count, self.fps_window_s)
        while not self._stop.is_set():
            fps = rate.sample(time.monotonic())
            if fps is not None:
                self._record_fps(fps)
            try:
                code = self.scanner.read_code(0.25)
            except DeviceError as exc:
                log.warning("scanner: %s", exc.health.reason)
                self._stop.wait(1.0)
                continue
            if code is None:
                continue
            self._noted(PeripheralLog.scanned)
            for callback in list(self._scan_callbacks):
                try:
                    callback(code.text)
                except Exception:
                    log.exception("scan callback failed")

    def close(self) -> None:
        """Stops the scanner and the worker (after the records already queued), then
        releases the devices."""
        self._stop.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout=2.0)
        if self._worker is not None:
            records = self._records
            if records is not None:
                self._jobs.put(records.write_activity)  # what was noted since the last poll
            self._jobs.put(None)
            self._worker.join(timeout=STOP_TIMEOUT_S)
        for device in (self.scanner, self.printer, self.dispenser, self.panel):
            try:
                device.close()
            except Exception:
                log.exception("closing %s", type(device).__name__)


class FrameRate:
    """A camera's frame rate, from its frame counter sampled over windows of ``window_s``."""

    def __init__(self, frame_count: Callable[[], int | None], window_s: float) -> None:
        self._count = frame_count
        self._window_s = window_s
        self._start: tuple[float, int] | None = None

    def sample(self, now: float) -> float | None:
        """The frames per second over the window that ends at ``now``; ``None`` while the
        window is open, and always for a scanner without a camera."""
        count = self._count()
        if count is None:
            return None
        if self._start is None:
            self._start = (now, count)
            return None
        started, first = self._start
        if now - started < self._window_s:
            return None
        self._start = (now, count)
        return max(0, count - first) / (now - started)
