"""Receipt printers: layouts, ESC/POS encoding, python-escpos transports, and a simulator."""

from drivers.printer import receipts
from drivers.printer.document import Barcode, Cut, Feed, Qr, Receipt, Rule, Text
from drivers.printer.escpos_encode import encode_receipt
from drivers.printer.escpos_printer import EscposPrinter
from drivers.printer.interface import PrinterError, PrintIncompleteError, ReceiptPrinter
from drivers.printer.preview import render_preview
from drivers.printer.profiles import PROFILES, PrinterProfile
from drivers.printer.sim import SimulatedPrinter
from drivers.printer.status import PrinterStatus

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
