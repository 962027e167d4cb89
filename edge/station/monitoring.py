"""What the station leaves for the agent's telemetry: peripherals' health, last scan and print,
the camera's frame rate (through :mod:`edge.sync.health`).

The touchscreen process owns the peripherals; the sync agent, a separate process on the same
database, reads these records when it publishes telemetry (every 30 s by default). A
peripheral's row is written only when its state or fault code changes; the last scan and print
are kept in memory and written together once a station poll (:meth:`PeripheralLog.write_activity`);
the camera's frame rate only when its whole number of frames a second changes. An idle kiosk
that is doing fine costs the SD card nothing, a busy one a commit a poll. A failure to write is
logged, never passed on: telemetry must not break a customer's redemption or registration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from drivers.health import HealthState
from edge.app import AppContext
from edge.station.api import DeviceStatus
from edge.sync import health

log = logging.getLogger(__name__)


class PeripheralLog:
    """Records the station's observations for telemetry; every method is safe to call from
    any thread and never raises."""

    def __init__(self, app: AppContext) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._recorded: dict[str, tuple[str, str]] = {}
        self._fps: int | None = None  # the recorded frame rate, rounded
        self._scan_at: datetime | None = None  # noted, not yet written
        self._print_at: datetime | None = None
        self._guard("reading the recorded peripheral health", self._load)

    def _load(self) -> None:
        recorded = health.reported_peripherals(self.app)
        fps = health.recorded_camera_fps(self.app)
        with self._lock:
            self._recorded = recorded
            self._fps = None if fps is None else round(fps)

    def now(self) -> datetime:
        return self.app.clock()

    def devices(self, statuses: Iterable[DeviceStatus]) -> list[str]:
        """Writes the devices whose state or fault code changed; returns their names."""
        written: list[str] = []
        for status in statuses:
            state = HealthState.of(status.state)
            seen = (state.value, status.code[:64])
            with self._lock:
                if self._recorded.get(status.device) == seen:
                    continue

            def write(status: DeviceStatus = status, state: HealthState = state) -> None:
                health.report_peripheral(self.app, status.device, state, status.code, status.reason)

            if self._guard(f"recording {status.device} health", write):
                with self._lock:
                    self._recorded[status.device] = seen
                written.append(status.device)
                log.info(
                    "%s is %s%s", status.device, state, f" ({status.code})" if status.code else ""
                )
        return written

    def scanned(self, at: datetime) -> None:
        """Notes a scan (in memory: :meth:`write_activity` writes it)."""
        with self._lock:
            self._scan_at = at

    def printed(self, at: datetime) -> None:
        """Notes a successful print (in memory: :meth:`write_activity` writes it)."""
        with self._lock:
            self._print_at = at

    def write_activity(self) -> bool:
        """Writes the last scan and print noted since the last write, in one commit; True if
        there was something to write and it was written (kept for the next try if not)."""
        with self._lock:
            scan_at, print_at = self._scan_at, self._print_at
            self._scan_at = self._print_at = None
        if scan_at is None and print_at is None:
            return False
        if self._guard(
            "recording the last scan and print",
            lambda: health.note_activity(self.app, scan_at, print_at),
        ):
            return True
        with self._lock:  # kept unless a newer one was noted meanwhile
            self._scan_at = self._scan_at or scan_at
            self._print_at = self._print_at or print_at
        return False

    def camera_fps(self, fps: float) -> bool:
        """Records the camera's frame rate if its whole number of frames a second differs
        from the one recorded; True if it was written."""
        rounded = round(fps)
        with self._lock:
            if rounded == self._fps:
                return False
        if not self._guard(
            "recording the camera frame rate", lambda: health.note_camera_fps(self.app, fps)
        ):
            return False
        with self._lock:
            self._fps = rounded
        return True

    @staticmethod
    def _guard(what: str, work: Callable[[], None]) -> bool:
        try:
            work()
        except Exception:  # a full disk or a locked database: telemetry waits, customers don't
            log.exception("telemetry: %s failed", what)
            return False
        return True
