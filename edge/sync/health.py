"""Where the app leaves what telemetry reports: peripherals' health and a few timestamps.

The agent does not own the peripherals (the touchscreen app does), so the app records their
health and its last scan and print here, and the agent reads them for telemetry. The app's
station (:mod:`edge.station.monitoring`) writes a peripheral's row only when its state or
fault code changes, the last scan and print together at most once a station poll, and the
camera's frame rate only when its whole number of frames a second changes: the SD card is
spared the writes of a kiosk that is simply doing fine.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from drivers.health import HealthState
from edge.app import AppContext
from edge.services.tx import get_meta, set_meta
from edge.storage.sync_models import PeripheralHealth

LAST_SCAN_AT = "hw.last_scan_at"
LAST_PRINT_AT = "hw.last_print_at"
CAMERA_FPS = "hw.camera_fps"


def report_peripheral(
    app: AppContext, name: str, state: HealthState | str, code: str = "", reason: str = ""
) -> None:
    """Records a peripheral's health (a :class:`~drivers.health.HealthState` or its word):
    the one place a peripheral's row is written."""
    try:
        state = HealthState(state)
    except ValueError:
        raise ValueError(f"unknown health state {state!r}") from None
    with app.db.write() as session:
        row = session.get(PeripheralHealth, name)
        if row is None:
            row = PeripheralHealth(name=name[:32])
            session.add(row)
        row.state, row.code, row.reason = state.value, code[:64], reason[:256]
        row.updated_at = app.clock()


def reported_peripherals(app: AppContext) -> dict[str, tuple[str, str]]:
    """Each peripheral's recorded (state, code), as telemetry will report it."""
    with app.db.read() as session:
        rows = session.execute(
            select(PeripheralHealth.name, PeripheralHealth.state, PeripheralHealth.code)
        )
        return {name: (state, code) for name, state, code in rows}


def note_activity(
    app: AppContext, last_scan_at: datetime | None, last_print_at: datetime | None
) -> None:
    """Records the last scan and the last successful print (those given) in one commit."""
    with app.db.write() as session:
        if last_scan_at is not None:
            set_meta(session, LAST_SCAN_AT, last_scan_at.isoformat())
        if last_print_at is not None:
            set_meta(session, LAST_PRINT_AT, last_print_at.isoformat())


def recorded_camera_fps(app: AppContext) -> float | None:
    """The camera's frame rate as last recorded; None if none was (or it cannot be read)."""
    with app.db.read() as session:
        raw = get_meta(session, CAMERA_FPS)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def note_camera_fps(app: AppContext, fps: float) -> None:
    with app.db.write() as session:
        set_meta(session, CAMERA_FPS, f"{fps:.2f}")
