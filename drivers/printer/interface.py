"""The receipt printer interface: send bytes, report status; printing is shared."""

from __future__ import annotations

from abc import ABC, abstractmethod

from drivers.errors import DeviceError
from drivers.health import Health, HealthState
from drivers.printer.document import Receipt
from drivers.printer.escpos_encode import encode_step, header
from drivers.printer.profiles import PrinterProfile
from drivers.printer.status import PrinterStatus


class PrinterError(DeviceError):
    """Nothing was printed: the printer was out of paper, offline or open before we began."""


class PrintIncompleteError(DeviceError):
    """Printing began but the receipt is not whole (paper ran out); it must be reprinted."""


class ReceiptPrinter(ABC):
    """An ESC/POS receipt printer.

    Backends override :meth:`send` (one transport write, bounded by a timeout) and
    :meth:`status`; :meth:`print_receipt` checks status before and after, so a receipt is
    never reported printed when the paper ran out half-way.
    """

    def __init__(self, profile: PrinterProfile) -> None:
        self.profile = profile

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Writes bytes to the printer; raises ``DeviceError`` when it cannot."""

    @abstractmethod
    def status(self) -> PrinterStatus:
        """Asks the printer's real-time status; never blocks beyond the I/O timeout."""

    @abstractmethod
    def close(self) -> None:
        """Releases the transport; safe to call twice."""

    def health(self) -> Health:
        try:
            return self.status().health()
        except DeviceError as exc:
            return exc.health

    def print_receipt(self, receipt: Receipt) -> None:
        """Prints ``receipt`` whole, or raises saying whether anything came out."""
        before = self.status().health()
        if before.state is HealthState.FAILED:
            raise PrinterError(before)
        self.send(header(self.profile))
        for step in receipt.steps:
            self.send(encode_step(step, self.profile))
        after = self.status().health()
        if after.state is HealthState.FAILED:
            raise PrintIncompleteError(
                Health.failed(after.code, f"{receipt.title} incomplete: {after.reason}")
            )
