"""Receipt bytes, byte for byte, and the printer contract over the simulator and faults.

The member center's own slips are tested with the appliance (tests/kiosk/test_slips.py).
"""

from __future__ import annotations

import os

import pytest

from drivers.health import HealthState
from drivers.printer import (
    PROFILES,
    Barcode,
    Cut,
    EscposPrinter,
    PrinterError,
    PrinterProfile,
    PrintIncompleteError,
    Qr,
    Receipt,
    SimulatedPrinter,
    Text,
    encode_receipt,
    receipts,
)
from drivers.printer.document import columns
from drivers.printer.status import PrinterStatus, parse_offline_cause, parse_paper

HUIYUAN_ZHONGXIN_GB18030 = b"\xbb\xe1\xd4\xb1\xd6\xd0\xd0\xc4"  # 会员中心
INIT, KANJI_ON = b"\x1b@", b"\x1c&"
HEADER = receipts.ReceiptHeader("华联超市", "S001", "K01", "2026-11-23 10:15", "会员中心")


def test_chinese_line_is_gb18030_after_kanji_mode():
    receipt = Receipt("t", (Text("会员中心"), Cut()))
    assert encode_receipt(receipt, PROFILES["generic-80"]) == (
        INIT + KANJI_ON + b"\x1ba\x00" + HUIYUAN_ZHONGXIN_GB18030 + b"\n" + b"\x1dVB\x00"
    )


def test_fullwidth_punctuation_and_yen_without_hanzi_are_not_question_marks():
    profile = PROFILES["generic-80"]
    assert profile.encode("，：¥") == b"\xa3\xac\xa3\xba\x81\x30\x84\x36"
    assert PROFILES["gbk-80"].encode("¥5") == b"\xa3\xa45"  # GBK lacks U+00A5: full-width twin
    assert b"?" not in PROFILES["big5-80"].encode("會員中心￥")


def test_big5_profile_encodes_traditional_text():
    assert PROFILES["big5-80"].encode("會員") == "會員".encode("big5")


def test_centred_bold_big_text_restores_style():
    receipt = Receipt("t", (Text("A", "center", bold=True, big=True),))
    profile = PrinterProfile(kanji_mode=False)
    assert encode_receipt(receipt, profile) == (
        INIT
        + b"\x1ba\x01"
        + b"\x1bE\x01"
        + b"\x1d!\x11"
        + b"A\n"
        + b"\x1d!\x00"
        + b"\x1bE\x00"
        + b"\x1ba\x00"
    )


def test_native_qr_code_commands():
    data = encode_receipt(Receipt("t", (Qr("AB", 4),)), PrinterProfile(kanji_mode=False))
    assert data == (
        INIT
        + b"\x1ba\x01"
        + b"\x1d(k\x04\x001A2\x00"
        + b"\x1d(k\x03\x001C\x04"
        + b"\x1d(k\x03\x001E1"
        + b"\x1d(k\x05\x001P0AB"
        + b"\x1d(k\x03\x001Q0"
        + b"\x1ba\x00"
    )


def test_ean13_and_code128_barcodes():
    setup = b"\x1dh\x50\x1dw\x02\x1dH\x02"
    ean = encode_receipt(Receipt("t", (Barcode("6901234567892", "EAN13"),)), PrinterProfile())
    assert ean.endswith(b"\x1ba\x01" + setup + b"\x1dkC\x0d6901234567892\x1ba\x00")
    c128 = encode_receipt(Receipt("t", (Barcode("M-1", "CODE128"),)), PrinterProfile())
    assert c128.endswith(setup + b"\x1dkI\x05{BM-1\x1ba\x00")
    with pytest.raises(ValueError):
        encode_receipt(Receipt("t", (Barcode("12AB", "EAN13"),)), PrinterProfile())


def test_raster_profile_prints_chinese_as_an_image_and_ascii_as_text():
    profile = PROFILES["raster-58"]
    data = encode_receipt(Receipt("t", (Text("会员中心"), Text("OK"))), profile)
    assert data.startswith(INIT + b"\x1dv0\x00" + bytes([48, 0, 30, 0]))  # 384 dots, 30 rows
    assert HUIYUAN_ZHONGXIN_GB18030 not in data
    assert data.endswith(b"\x1ba\x00OK\n")
    raster = data[len(INIT) + 8 : len(INIT) + 8 + 48 * 30]
    assert any(raster)  # some dots are black


def test_test_page_holds_center_name_qr_barcode_status_and_cut():
    page = receipts.technician_test_page(
        receipts.TechnicianTestPage(HEADER, "sim", 58, "gb18030", ("paper: ok",)), 32
    )
    data = encode_receipt(page, PROFILES["generic-58"])
    assert HUIYUAN_ZHONGXIN_GB18030 in data
    assert b"\x1d(k" in data and b"\x1dkC" in data and b"paper: ok" in data
    assert data.endswith(b"\x1dVB\x00")


def test_heading_prints_the_banner_only_when_there_is_one():
    plain = receipts.ReceiptHeader("Corner Shop", "S001", "T1", "2026-11-23 10:15")
    assert [step.text for step in receipts.heading(plain, "Refund", 32)[:2]] == [
        "Corner Shop",
        "Refund",
    ]
    banner = receipts.heading(HEADER, "Refund", 32)[1]
    assert banner == Text("会员中心", "center", big=True)


def _statement() -> Receipt:
    """A long receipt: a heading, eight lines of points, a total, the closing and a cut."""
    lines = [Text(columns(f"11-0{i} 购物", f"{10 * i:+d}", 48)) for i in range(1, 9)]
    steps = receipts.heading(HEADER, "积分对账单 Points statement", 48) + lines
    steps += [Text(columns("当前积分", "5230", 48), bold=True)]
    return Receipt("points-statement", tuple(steps + receipts.closing("谢谢惠顾，欢迎再次光临！")))


def test_paper_running_out_mid_receipt_raises_incomplete_and_fails_health():
    printer = SimulatedPrinter(PROFILES["generic-80"], paper_dots=300)
    with pytest.raises(PrintIncompleteError) as raised:
        printer.print_receipt(_statement())
    assert raised.value.health.code == "paper_out"
    assert printer.health().state is HealthState.FAILED
    assert printer.output.startswith(INIT + KANJI_ON)  # bytes up to the end were sent
    with pytest.raises(PrinterError):  # the next receipt is refused before a byte is sent
        before = len(printer.output)
        printer.print_receipt(_statement())
    assert len(printer.output) == before


@pytest.mark.parametrize(
    ("fault", "state", "code"),
    [
        ("paper_low", HealthState.DEGRADED, "paper_low"),
        ("offline", HealthState.FAILED, "offline"),
        ("cover_open", HealthState.FAILED, "cover_open"),
    ],
)
def test_status_faults_become_health(fault, state, code):
    printer = SimulatedPrinter(PROFILES["generic-80"])
    setattr(printer, fault, True)
    assert (printer.health().state, printer.health().code) == (state, code)
    if state is HealthState.DEGRADED:
        printer.print_receipt(_statement())  # paper low still prints
        assert printer.output.endswith(b"\x1dVB\x00")


@pytest.fixture(params=["sim", pytest.param("real", marks=pytest.mark.hardware)])
def any_printer(request):
    """The printer contract runs on the simulator and, where one is attached, a real one."""
    if request.param == "sim":
        yield SimulatedPrinter(PROFILES["generic-80"])
        return
    target = os.environ.get("KIOSK_TEST_PRINTER")  # e.g. network:192.168.1.50
    if not target:
        pytest.skip("no printer attached (set KIOSK_TEST_PRINTER=backend:target)")
    backend, _, where = target.partition(":")
    printer = EscposPrinter.open(backend, where, PROFILES["generic-80"], 3.0)
    yield printer
    printer.close()


def test_contract_status_and_a_whole_receipt(any_printer):
    assert any_printer.status().paper in ("ok", "low")
    any_printer.print_receipt(_statement())
    assert any_printer.health().state is not HealthState.FAILED


def test_unplugged_printer_fails_health():
    printer = SimulatedPrinter(PROFILES["generic-80"])
    printer.unplug()
    assert printer.health().code == "disconnected"


def test_real_time_status_bits():
    assert parse_paper(0x12) == "ok"
    assert parse_paper(0x1E) == "low"
    assert parse_paper(0x72) == "out"
    assert parse_offline_cause(0x16) is True
    assert PrinterStatus(None, "unknown", None).health().state is HealthState.DEGRADED


def test_a_new_roll_after_paper_out_prints_again():
    printer = SimulatedPrinter(PROFILES["generic-80"], paper_dots=300)
    printer.paper_low = True
    with pytest.raises(PrintIncompleteError):
        printer.print_receipt(_statement())
    printer.load_paper()
    assert printer.health().state is HealthState.OK  # neither out nor low
    printer.print_receipt(_statement())
    assert printer.output.endswith(b"\x1dVB\x00")
    printer.load_paper(60)  # two lines' worth
    with pytest.raises(PrintIncompleteError):
        printer.print_receipt(_statement())
    with pytest.raises(ValueError):
        printer.load_paper(0)
