"""Turns a :class:`Receipt` into the exact ESC/POS byte stream for a printer profile."""

from __future__ import annotations

from drivers.printer.document import Barcode, Cut, Feed, Qr, Receipt, Rule, Step, Text
from drivers.printer.profiles import PrinterProfile

ESC = b"\x1b"
GS = b"\x1d"
FS = b"\x1c"
INIT = ESC + b"@"
KANJI_ON = FS + b"&"
KANJI_OFF = FS + b"."
BOLD_ON, BOLD_OFF = ESC + b"E\x01", ESC + b"E\x00"
BIG_ON, BIG_OFF = GS + b"!\x11", GS + b"!\x00"
ALIGN = {"left": ESC + b"a\x00", "center": ESC + b"a\x01", "right": ESC + b"a\x02"}
CUT = GS + b"VB\x00"  # feed to the cutter, then full cut
LF = b"\n"


def header(profile: PrinterProfile) -> bytes:
    """Initialise, and enter double-byte mode where the profile says so."""
    return INIT + (KANJI_ON if profile.kanji_mode else b"")


def encode_step(step: Step, profile: PrinterProfile) -> bytes:
    """The bytes of one step; each step leaves alignment and style as it found them."""
    match step:
        case Text():
            return _text(step, profile)
        case Rule():
            return ALIGN["left"] + step.char[0].encode("ascii") * profile.columns + LF
        case Qr():
            return ALIGN["center"] + qr_native(step.data, step.module_dots) + ALIGN["left"]
        case Barcode():
            return ALIGN["center"] + barcode_native(step.data, step.kind) + ALIGN["left"]
        case Feed():
            return ESC + b"d" + bytes([step.lines])
        case Cut():
            return CUT
    raise TypeError(f"not a receipt step: {step!r}")


def encode_receipt(receipt: Receipt, profile: PrinterProfile) -> bytes:
    return header(profile) + b"".join(encode_step(s, profile) for s in receipt.steps)


def _text(step: Text, profile: PrinterProfile) -> bytes:
    if profile.encoding == "raster" and not step.text.isascii():
        from drivers.printer.raster import raster_line  # Pillow, for raster printers only

        return raster_line(step.text, profile.dots, step.align, step.bold, step.big)
    body = profile.encode(step.text)
    out = ALIGN[step.align]
    if step.bold:
        out += BOLD_ON
    if step.big:
        out += BIG_ON
    out += body + LF
    if step.big:
        out += BIG_OFF
    if step.bold:
        out += BOLD_OFF
    if step.align != "left":
        out += ALIGN["left"]
    return out


def _gs_k(fn: int, payload: bytes) -> bytes:
    size = len(payload) + 2
    return GS + b"(k" + bytes([size & 0xFF, size >> 8, 49, fn]) + payload


def qr_native(data: str, module_dots: int = 6) -> bytes:
    """ESC/POS ``GS ( k`` QR commands: model 2, module size, level M, store, print.

    The payload is UTF-8, which is what our scanners and phones decode by default.
    """
    return (
        GS
        + b"(k\x04\x001A2\x00"  # fn 65: model 2
        + _gs_k(67, bytes([module_dots]))
        + _gs_k(69, b"1")  # level M (48 L, 49 M, 50 Q, 51 H)
        + _gs_k(80, b"0" + data.encode("utf-8"))
        + _gs_k(81, b"0")
    )


def barcode_native(data: str, kind: str) -> bytes:
    """``GS k`` format B: height 80 dots, module 2 dots, readable text below."""
    setup = GS + b"h\x50" + GS + b"w\x02" + GS + b"H\x02"
    if kind == "EAN13":
        digits = data.encode("ascii")
        if not data.isdigit() or len(data) not in (12, 13):
            raise ValueError(f"EAN-13 needs 12 or 13 digits, got {data!r}")
        return setup + GS + b"k\x43" + bytes([len(digits)]) + digits
    payload = b"{B" + data.encode("ascii")
    return setup + GS + b"k\x49" + bytes([len(payload)]) + payload
