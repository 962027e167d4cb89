"""Opening serial devices: by stable name, exclusively, always with timeouts."""

from __future__ import annotations

import os
from typing import Protocol

from drivers._lazy import require
from drivers.errors import DeviceUnavailableError
from drivers.health import Health


class SerialLink(Protocol):
    """The part of ``serial.Serial`` the drivers use; simulators implement just this."""

    timeout: float | None

    def write(self, data: bytes, /) -> int | None: ...

    def read(self, size: int = 1, /) -> bytes: ...

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def stable_name_warning(port: str) -> str:
    """Why a port name may change across reboots, or "" when it is a stable one."""
    if port.startswith(("/dev/serial/by-id/", "/dev/serial/by-path/", "/dev/kiosk-")):
        return ""
    if port.startswith("/dev/tty"):
        return f"{port} may be renumbered at boot; use /dev/serial/by-id/... or a udev symlink"
    return ""


def open_serial(port: str, baudrate: int, timeout_s: float) -> SerialLink:
    """Opens ``port`` exclusively with read and write timeouts.

    Exclusive access (a ``TIOCEXCL`` lock) keeps ModemManager or a second process from
    interleaving bytes with ours. ``port`` may be a pyserial URL (``loop://``) for tests.
    """
    serial = require("serial", "install pyserial")
    if not port:
        raise DeviceUnavailableError(Health.failed("not_configured", "no serial port configured"))
    is_url = "://" in port
    if not is_url and not os.path.exists(port):
        raise DeviceUnavailableError(Health.failed("disconnected", f"{port} does not exist"))
    try:
        if is_url:
            link = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout_s)
            link.write_timeout = timeout_s
        else:
            link = serial.Serial(
                port,
                baudrate=baudrate,
                timeout=timeout_s,
                write_timeout=timeout_s,
                exclusive=True,
            )
    except (OSError, ValueError, serial.SerialException) as exc:
        raise DeviceUnavailableError(
            Health.failed("disconnected", f"cannot open {port}: {exc}")
        ) from exc
    return link  # type: ignore[no-any-return]
