"""What most shop receipts share, and the technician's test page.

A receipt opens with the store, an optional banner, its title and who printed it when
(:func:`heading`), and ends with a rule, a closing note and a cut (:func:`closing`). The
layouts themselves belong to the application that prints them; each takes the paper's column
count, so one layout serves 58 and 80 mm rolls.

Example::

    head = ReceiptHeader("Corner Shop", "S001", "T1", "2026-11-23 10:15")
    steps = heading(head, "Refund", 48) + [Text(columns("Total", "¥9.90", 48))]
    printer.print_receipt(Receipt("refund", tuple(steps + closing("Thank you"))))
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.printer.document import Barcode, Cut, Feed, Qr, Receipt, Rule, Step, Text, columns


@dataclass(frozen=True)
class ReceiptHeader:
    """Who printed it and when; ``printed_at`` is already local time text. ``banner``, when
    set, is printed large under the store's name (a department or counter, say)."""

    store_name: str
    store_id: str
    device_id: str
    printed_at: str
    banner: str = ""


@dataclass(frozen=True)
class TechnicianTestPage:
    header: ReceiptHeader
    printer_name: str
    paper_mm: int
    encoding: str
    status_lines: tuple[str, ...]


def heading(h: ReceiptHeader, title: str, width: int) -> list[Step]:
    """The store, the banner, the title, then store, device and time, between rules."""
    return [
        Text(h.store_name, "center", bold=True),
        *([Text(h.banner, "center", big=True)] if h.banner else []),
        Text(title, "center", bold=True),
        Rule(),
        Text(columns("门店 Store", h.store_id, width)),
        Text(columns("设备 Device", h.device_id, width)),
        Text(columns("时间 Time", h.printed_at, width)),
        Rule(),
    ]


def closing(note: str) -> list[Step]:
    """A rule, ``note`` centred, two lines of feed and the cut."""
    return [Rule(), Text(note, "center"), Feed(2), Cut()]


def technician_test_page(r: TechnicianTestPage, width: int) -> Receipt:
    """Every kind of step once: double-byte text with full-width punctuation and the yen
    sign, ASCII, a QR code, an EAN-13, the printer's status lines, then the cut."""
    steps = heading(r.header, "打印机测试页 Printer test page", width)
    steps += [
        Text(columns("打印机", r.printer_name, width)),
        Text(columns("纸宽", f"{r.paper_mm} mm", width)),
        Text(columns("编码", r.encoding, width)),
        Text("中文：会员中心，积分￥¥：测试。", bold=True),
        Text("ASCII 0123456789 ABC xyz"),
        Qr(f"KIOSK-TEST:{r.header.store_id}:{r.header.device_id}"),
        Barcode("6901234567892", "EAN13"),
        Rule(),
        *[Text(line) for line in r.status_lines],
    ]
    return Receipt("test-page", tuple(steps + closing("测试完成 Test complete")))
