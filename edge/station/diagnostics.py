"""What the technician's screen shows: software, provisioning, the HQ link and the log's tail.

The broker is probed with a plain TCP connection (a second at most), so the screen can tell
"the broker is down" from "this device cannot reach it" without starting MQTT here.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from edge import __version__
from edge.app import AppContext
from edge.services.status import center_status
from edge.station.api import TechnicianInfo

log = logging.getLogger(__name__)

LOG_FILE = "logs/kiosk.log"  # under the data directory
LOG_TAIL_LINES = 40


def technician_info(app: AppContext) -> TechnicianInfo:
    status = center_status(app)
    sync = app.config.sync
    reachable = probe(sync.broker_host, sync.broker_port) if sync.enabled else None
    keys_dir = (
        Path(app.config.security.keys_dir)
        if app.config.security.keys_dir
        else app.data_dir / "keys"
    )
    device = app.config.device
    return TechnicianInfo(
        version=__version__,
        store_id=status.store_id,
        device_id=status.device_id,
        data_dir=status.data_dir,
        config_file=str(app.config_path),
        config_present=app.config_path.exists(),
        keys_present=keys_dir.is_dir() and any(keys_dir.iterdir()),
        card_range=f"{device.card_range_start}-{device.card_range_end}",
        sync_enabled=sync.enabled,
        broker=f"{sync.broker_host}:{sync.broker_port}",
        broker_reachable=reachable,
        offline=status.offline,
        hq_last_contact=status.hq_last_contact,
        outbox_pending=status.outbox_pending,
        members=status.members,
        log_tail=tuple(tail(app.data_dir / LOG_FILE, LOG_TAIL_LINES)),
    )


def probe(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout_s``."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        log.info("broker %s:%s unreachable after %.2fs", host, port, time.monotonic() - start)
        return False


def tail(path: Path, lines: int, window: int = 16_384) -> list[str]:
    """The last ``lines`` whole lines of a text file (read from its last ``window`` bytes);
    none if unreadable. A line cut by the window's start is left out."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - window))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = text.splitlines()
    if size > window and found:
        found = found[1:]  # began before the window
    return found[-lines:]
