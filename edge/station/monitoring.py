"""What the station leaves for the agent's telemetry: peripherals' health, last scan and print,
the camera's frame rate (through :mod:`edge.sync.health`).

The touchscreen process owns the peripherals; the sync agent, a separate process on the same
database, reads these records when it publishes telemetry. A peripheral's row is written only
when its state or fault code changes (a kiosk that is doing fine costs the SD card nothing),
and a failure to write is logged, never passed on: telemetry must not break a customer's
redemption or registration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from edge.app import AppContext
from edge.station.api import DeviceStatus
from edge.sync import health

log = logging.getLogger(__name__)

STATES = ("ok", "degraded", "failed")


class PeripheralLog:
    """Records the station's observations for telemetry; every method is safe to call from
    any thread and never raises."""

    def __init__(self, app: AppContext) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._recorded: dict[str, tuple[str, str]] = {}
        self._guard("reading the recorded peripheral health", self._load)

    def _load(self) -> None:
        recorded = health.reported_peripherals(self.app)
        with self._lock:
            self._recorded = recorded

    def now(self) -> datetime:
        return self.app.clock()

    def devices(self, statuses: Iterable[DeviceStatus]) -> list[str]:
        """Writes the devices whose state or fault code changed; returns their names."""
        written: list[str] = []
        for status in statuses:
            state = status.state if status.state in STATES else "unknown"
            seen = (state, status.code[:64])
            with self._lock:
                if self._recorded.get(status.device) == seen:
                    continue

            def write(status: DeviceStatus = status, state: str = state) -> None:
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
        self._guard("recording the last scan", lambda: health.note_scan(self.app, at))

    def printed(self, at: datetime) -> None:
        self._guard("recording the last print", lambda: health.note_print(self.app, at))

    def camera_fps(self, fps: float) -> None:
        self._guard(
            "recording the camera frame rate", lambda: health.note_camera_fps(self.app, fps)
        )

    @staticmethod
    def _guard(what: str, work: Callable[[], None]) -> bool:
        try:
            work()
        except Exception:  # a full disk or a locked database: telemetry waits, customers don't
            log.exception("telemetry: %s failed", what)
            return False
        return True
