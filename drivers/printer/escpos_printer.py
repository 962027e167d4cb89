"""The real printer: python-escpos transports (USB, serial, network, file) chosen by config."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from drivers._lazy import require
from drivers.errors import DeviceTimeoutError, DeviceUnavailableError
from drivers.health import Health
from drivers.printer.interface import ReceiptPrinter
from drivers.printer.profiles import PrinterProfile
from drivers.printer.status import (
    QUERY_OFFLINE_CAUSE,
    QUERY_PAPER,
    QUERY_PRINTER,
    UNKNOWN,
    PrinterStatus,
    parse_offline_cause,
    parse_paper,
    parse_printer,
)

READABLE = ("usb", "serial", "network")


class EscposPrinter(ReceiptPrinter):
    """An ESC/POS printer behind a python-escpos transport; we only use its ``_raw``/``_read``.

    Wiring: USB printers appear as ``vid:pid`` (``lsusb``; needs pyusb and our udev rule for
    access); serial ones on ``/dev/kiosk-printer``; network ones on port 9100. A file target
    (``/dev/usb/lp0``) can write but not read, so its status is unknown.

    Example:
        >>> printer = EscposPrinter.open("network", "192.168.1.50", profile, 5.0)  # doctest: +SKIP
        >>> printer.print_receipt(receipt)  # doctest: +SKIP
    """

    def __init__(self, transport: Any, profile: PrinterProfile, readable: bool) -> None:
        super().__init__(profile)
        self._transport = transport
        self._readable = readable

    @classmethod
    def open(
        cls, backend: str, target: str, profile: PrinterProfile, timeout_s: float
    ) -> EscposPrinter:
        printers = require("escpos.printer", "install python-escpos")
        try:
            if backend == "usb":
                require("usb", "install pyusb (python-escpos[usb]) for USB printers")
                vid, pid = (int(part, 16) for part in target.split(":"))
                transport = printers.Usb(vid, pid, timeout=int(timeout_s * 1000))
            elif backend == "serial":
                if not Path(target).exists():
                    raise DeviceUnavailableError(
                        Health.failed("disconnected", f"printer port {target} does not exist")
                    )
                transport = printers.Serial(target, timeout=timeout_s)
            elif backend == "network":
                host, _, port = target.partition(":")
                transport = printers.Network(host, int(port or 9100), timeout=timeout_s)
            elif backend == "file":
                transport = printers.File(target)
            else:
                raise ValueError(f"unknown printer backend {backend!r}")
            transport.open()
        except DeviceUnavailableError:
            raise
        except Exception as exc:  # escpos raises its own types per transport
            reason = " ".join(str(exc).split())  # escpos messages span lines
            raise DeviceUnavailableError(
                Health.failed("disconnected", f"printer {backend}:{target}: {reason}")
            ) from exc
        return cls(transport, profile, backend in READABLE)

    def send(self, data: bytes) -> None:
        try:
            self._transport._raw(data)
        except TimeoutError as exc:
            raise DeviceTimeoutError(Health.failed("timeout", f"printer write: {exc}")) from exc
        except Exception as exc:
            raise DeviceUnavailableError(Health.failed("disconnected", f"printer: {exc}")) from exc

    def status(self) -> PrinterStatus:
        """Asks ``DLE EOT 1, 2, 4``; a printer that does not answer gives unknown status."""
        if not self._readable:
            return UNKNOWN
        printer = self._query(QUERY_PRINTER)
        if printer is None:
            return UNKNOWN
        cause = self._query(QUERY_OFFLINE_CAUSE)
        paper = self._query(QUERY_PAPER)
        return PrinterStatus(
            parse_printer(printer),
            parse_paper(paper) if paper is not None else "unknown",
            parse_offline_cause(cause) if cause is not None else None,
        )

    def _query(self, command: bytes) -> int | None:
        try:
            self._transport._raw(command)
            reply = self._transport._read()
        except Exception as exc:
            raise DeviceUnavailableError(
                Health.failed("disconnected", f"printer status: {exc}")
            ) from exc
        return reply[-1] if reply else None

    def close(self) -> None:
        # closing a vanished device must not mask the fault that brought us here
        with contextlib.suppress(Exception):
            self._transport.close()
