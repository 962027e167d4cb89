"""Receipt printers: the receipt document, ESC/POS and raster encoding, python-escpos
transports, a simulator, and the shared receipt parts with the technician's test page.

Applications build their own layouts from :mod:`drivers.printer.document` steps and
:mod:`drivers.printer.receipts`' heading and closing. :func:`render_preview` (Pillow, NumPy,
zxing-cpp) is loaded on first use: a printer with a Chinese font of its own never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.printer import receipts
from drivers.printer.document import Barcode, Cut, Feed, Qr, Receipt, Rule, Text
from drivers.printer.escpos_encode import encode_receipt
from drivers.printer.escpos_printer import EscposPrinter
from drivers.printer.interface import PrinterError, PrintIncompleteError, ReceiptPrinter
from drivers.printer.profiles import PROFILES, PrinterProfile
from drivers.printer.sim import SimulatedPrinter
from drivers.printer.status import PrinterStatus

if TYPE_CHECKING:
    from drivers.printer.preview import render_preview


def __getattr__(name: str) -> Any:
    if name == "render_preview":
        from drivers.printer.preview import render_preview

        return render_preview
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROFILES",
    "Barcode",
    "Cut",
    "EscposPrinter",
    "Feed",
    "PrintIncompleteError",
    "PrinterError",
    "PrinterProfile",
    "PrinterStatus",
    "Qr",
    "Receipt",
    "ReceiptPrinter",
    "Rule",
    "SimulatedPrinter",
    "Text",
    "encode_receipt",
    "receipts",
    "render_preview",
]
