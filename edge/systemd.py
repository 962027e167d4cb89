"""systemd notifications (sd_notify) without libsystemd: READY, WATCHDOG, STOPPING.

Standard library only: the sync agent and the touchscreen app (which may import nothing
else of the core but the station's interface) both tell systemd through it.
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Sends ``state`` to ``$NOTIFY_SOCKET``; False when not run by systemd (or it failed)."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), or None when no watchdog is set for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
