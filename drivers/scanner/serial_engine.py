"""Serial and USB-serial scan engines: each code arrives as a line ending in CR and/or LF."""

from __future__ import annotations

import threading
from collections import deque

from drivers.errors import DeviceUnavailableError
from drivers.health import Health
from drivers.scanner.code import Code, Symbology
from drivers.scanner.interface import CodeScanner
from drivers.serialio import SerialLink

# AIM symbology identifiers some engines can prefix (enable them in the engine's setup).
_AIM = {"]Q": Symbology.QR_CODE, "]C": Symbology.CODE_128, "]E": Symbology.EAN_13}
MAX_LINE = 4096


def classify(line: str) -> Code:
    """Turns a scan line into a :class:`Code`, using the AIM prefix when the engine sends one.

    Without a prefix the symbology is inferred: 13 digits with a valid check digit are an
    EAN-13, anything else printable on one line is taken as Code 128 unless it holds
    characters Code 128 cannot carry (then it was a QR code).
    """
    prefix = line[:2]
    if prefix in _AIM and len(line) >= 3:
        return Code(_AIM[prefix], line[3:])
    if len(line) == 13 and line.isdigit() and _ean_check_ok(line):
        return Code(Symbology.EAN_13, line)
    if all(32 <= ord(ch) < 127 for ch in line) and len(line) <= 48:
        return Code(Symbology.CODE_128, line)
    return Code(Symbology.QR_CODE, line)


def _ean_check_ok(digits: str) -> bool:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


class SerialScanEngine(CodeScanner):
    """A fixed-mount scan engine in "serial (COM) emulation" mode.

    Wiring: USB, enumerated as ``/dev/ttyACM*``; open it through its stable name
    (``/dev/serial/by-id/usb-...`` or the ``/dev/kiosk-scanner`` link of our udev rules).
    The engine itself debounces (one line per presentation), so lines are passed through.
    Bytes that are not UTF-8, or a line longer than 4 KiB, are dropped and leave the engine
    ``degraded`` until a good line arrives.
    """

    def __init__(self, link: SerialLink) -> None:
        self._link = link
        self._pending = bytearray()
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()
        self._health = Health.ok()

    def read_code(self, timeout_s: float) -> Code | None:
        with self._lock:
            line = self._next_line(timeout_s)
        return classify(line) if line else None

    def _next_line(self, timeout_s: float) -> str | None:
        if self._lines:
            return self._lines.popleft()
        self._link.timeout = timeout_s
        try:
            chunk = self._link.read_until(b"\r", MAX_LINE)
        except OSError as exc:  # serial.SerialException is an OSError
            self._health = Health.failed("disconnected", f"scan engine: {exc}")
            raise DeviceUnavailableError(self._health) from exc
        self._pending += chunk
        for raw in bytes(self._pending).replace(b"\n", b"\r").split(b"\r")[:-1]:
            self._accept(raw)
        tail = bytes(self._pending).replace(b"\n", b"\r").split(b"\r")[-1]
        self._pending = bytearray(tail)
        if len(self._pending) >= MAX_LINE:
            self._health = Health.degraded("garbage", "scan engine sent an endless line")
            self._pending.clear()
        return self._lines.popleft() if self._lines else None

    def _accept(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._health = Health.degraded("garbage", "scan engine sent bytes that are not text")
            return
        if not text.isprintable():
            self._health = Health.degraded("garbage", "scan engine sent control characters")
            return
        self._health = Health.ok()
        self._lines.append(text)

    def health(self) -> Health:
        return self._health

    def close(self) -> None:
        self._link.close()
