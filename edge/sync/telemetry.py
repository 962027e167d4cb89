"""What the appliance reports about itself, including early signs of failure.

Undervoltage and throttling (``vcgencmd get_throttled``), SD-card wear (eMMC/SD ``life_time``
and ``pre_eol_info``) and free space, temperature, clock offset to HQ, camera frame rate and
the time of the last scan and print. Anything not available on this machine is left empty.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from drivers.health import HealthState
from edge import __version__
from edge.app import AppContext
from edge.domain.errors import KioskError
from edge.lifecycle.update import update_fault
from edge.protocol import DeviceHealth, StorageWear, Telemetry, Throttling
from edge.security.codes import voucher_key_text
from edge.services.connectivity import HQ_LAST_CONTACT
from edge.services.pushes import applied_catalogue_version, rules_state
from edge.services.replica import STORE_FEED_CURSOR
from edge.services.tx import get_meta
from edge.storage.models import OutboxEvent
from edge.storage.sync_models import PeripheralHealth
from edge.sync.health import CAMERA_FPS, LAST_PRINT_AT, LAST_SCAN_AT

log = logging.getLogger(__name__)
STARTED = time.monotonic()

# Free space where the ledger lives: low below the larger of 10 % and 200 MB (a nightly
# backup needs about the database's size again; HQ's ``disk_low`` alert uses the same
# defaults, configurable there), too low to run on below 50 MB.
LOW_SPACE_FRACTION = 0.10
LOW_SPACE_BYTES = 200 * 1000 * 1000
NO_SPACE_BYTES = 50 * 1000 * 1000
_THROTTLE_BITS = {
    "undervoltage_now": 0,
    "freq_capped_now": 1,
    "throttled_now": 2,
    "soft_temp_limit_now": 3,
    "undervoltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}


def parse_throttled(text: str) -> Throttling | None:
    """``throttled=0x50005`` as printed by ``vcgencmd get_throttled``."""
    _, _, value = text.strip().partition("=")
    try:
        raw = int(value, 16)
    except ValueError:
        return None
    flags = {name: bool(raw >> bit & 1) for name, bit in _THROTTLE_BITS.items()}
    return Throttling(raw=raw, **flags)


def read_throttling() -> Throttling | None:
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "get_throttled"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_throttled(out.stdout) if out.returncode == 0 else None


def _read_int(path: Path, base: int = 10) -> int | None:
    try:
        return int(path.read_text().split()[0], base)
    except (OSError, ValueError, IndexError):
        return None


def read_storage(data_dir: Path, sys_block: Path = Path("/sys/block")) -> StorageWear:
    """Free space where the ledger lives, and wear of the first MMC device if there is one."""
    usage = shutil.disk_usage(data_dir)
    life_a = life_b = pre_eol = None
    device = str(data_dir)
    for mmc in sorted(sys_block.glob("mmcblk*")):
        dev = mmc / "device"
        device = mmc.name
        try:
            parts = (dev / "life_time").read_text().split()
            life_a, life_b = int(parts[0], 16), int(parts[1], 16)
        except (OSError, ValueError, IndexError):
            pass
        pre_eol = _read_int(dev / "pre_eol_info", 16)
        break
    return StorageWear(
        device=device[:256],
        life_time_a=life_a if life_a is not None and life_a <= 0x0F else None,
        life_time_b=life_b if life_b is not None and life_b <= 0x0F else None,
        pre_eol=pre_eol if pre_eol is not None and pre_eol <= 3 else None,
        free_bytes=usage.free,
        total_bytes=usage.total,
    )


def space_state(free_bytes: int, total_bytes: int) -> str:
    """``ok``, ``low`` (below the larger of ``LOW_SPACE_FRACTION`` and ``LOW_SPACE_BYTES``)
    or ``full`` (below ``NO_SPACE_BYTES``)."""
    if free_bytes < NO_SPACE_BYTES:
        return "full"
    if free_bytes < max(total_bytes * LOW_SPACE_FRACTION, LOW_SPACE_BYTES):
        return "low"
    return "ok"


def describe_space(free_bytes: int, total_bytes: int) -> str:
    """``1.2 GB free of 31.9 GB (4 %)``."""
    share = f" ({free_bytes * 100 // total_bytes} %)" if total_bytes else ""
    return f"{_size(free_bytes)} free of {_size(total_bytes)}{share}"


def _size(n: int) -> str:
    if n >= 10**9:
        return f"{n / 10**9:.1f} GB"
    if n >= 10**6:
        return f"{n / 10**6:.0f} MB"
    return f"{n / 10**3:.0f} kB"


def read_temperature(zone: Path = Path("/sys/class/thermal/thermal_zone0/temp")) -> float | None:
    milli = _read_int(zone)
    return None if milli is None else milli / 1000


def _when(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def collect(app: AppContext, clock_offset_s: float | None) -> Telemetry:
    """One telemetry sample; faults lists what needs a person soon."""
    with app.db.read() as session:
        depth, oldest = session.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(
                OutboxEvent.delivered_at.is_(None)
            )
        ).one()
        devices = {
            row.name: DeviceHealth(
                state=HealthState.of(row.state).value,
                code=row.code,
                reason=row.reason,
                at=row.updated_at,
            )
            for row in session.scalars(select(PeripheralHealth))
        }
        last_sync = _when(get_meta(session, HQ_LAST_CONTACT))
        cursor = int(get_meta(session, STORE_FEED_CURSOR) or 0)
        catalogue_version = applied_catalogue_version(session)
        fps_raw = get_meta(session, CAMERA_FPS)
        last_scan = _when(get_meta(session, LAST_SCAN_AT))
        last_print = _when(get_meta(session, LAST_PRINT_AT))
    storage = read_storage(app.data_dir)
    throttling = read_throttling()
    faults = [f"{name}:{h.code or h.state}" for name, h in devices.items() if h.state == "failed"]
    if throttling is not None and throttling.undervoltage_now:
        faults.append("power:undervoltage")
    space = space_state(storage.free_bytes, storage.total_bytes) if storage.total_bytes else "ok"
    if space != "ok":
        faults.append("storage:disk_full" if space == "full" else "storage:low_space")
    if storage.pre_eol is not None and storage.pre_eol >= 2:
        faults.append("storage:wearing_out")
    if (update := update_fault(app.data_dir)) is not None:
        faults.append(update)  # HQ's rollout of that version counts the device as failed
    fps = None
    if fps_raw:
        try:
            fps = max(0.0, min(1000.0, float(fps_raw)))
        except ValueError:
            fps = None
    try:
        key = app.keys.device_signing_public_key()
    except (KioskError, OSError, ValueError) as exc:  # unreadable: said by the next use
        log.warning("the device's signing key cannot be read for telemetry: %s", exc)
        key = None
    return Telemetry(
        device_id=app.device_id,
        store_id=app.store_id,
        at=app.clock(),
        version=__version__,
        uptime_s=round(time.monotonic() - STARTED, 1),
        outbox_depth=int(depth),
        oldest_pending_at=oldest,
        last_sync_at=last_sync,
        replica_cursor=cursor,
        rules_version=rules_state(app).in_force,
        catalogue_version=catalogue_version,
        devices=devices,
        storage=storage,
        temperature_c=read_temperature(),
        throttling=throttling,
        clock_offset_s=clock_offset_s,
        camera_fps=fps,
        last_scan_at=last_scan,
        last_print_at=last_print,
        faults=faults[:64],
        signing_key=voucher_key_text(key) if key is not None else None,
    )
