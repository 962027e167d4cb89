"""The member center's slips: bytes and masking on paper, every layout on every printer.

Paper a member takes away shows the card's last four digits only; card slips show it all.
"""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.printer import PROFILES, encode_receipt, render_preview
from drivers.printer.document import Barcode, Qr, Text
from drivers.printer.gallery import write_gallery
from drivers.printer.receipts import ReceiptHeader
from drivers.scanner import CodeDecoder
from edge.security.codes import sign_voucher
from edge.security.personal import mask_phone
from edge.services import gifts, members
from edge.station import slips
from edge.station.api import CouponTile
from edge.station.slip_gallery import SAMPLES, TZ, sample_member, sample_redemption
from tests.drivers.receipt_contract import receipt_contract

HEADER = ReceiptHeader("华联超市", "S001", "K01", "2026-11-23 10:15", slips.CENTER_NAME)


def texts(receipt):
    return " ".join(step.text for step in receipt.steps if isinstance(step, Text))


def test_voucher_and_statement_mask_the_card_number(center, people):
    app = center.app
    result = gifts.redeem_gift(app, people.wang_card, "TOWEL", request_id="slip-test")
    view = members.show_member(app, card_no=people.wang_card)
    voucher = slips.gift_voucher(slips.header(app), result, view, app.tz, 32)[0]
    assert people.wang_card not in texts(voucher)
    assert "*" * 9 + people.wang_card[-4:] in texts(voucher)
    statement = slips.points_statement(slips.header(app), view, 32)
    assert people.wang_card not in texts(statement)
    card_slip = slips.new_card_slip(slips.header(app), view, 0, 32)
    assert people.wang_card in texts(card_slip)
    assert any(isinstance(s, Barcode) and s.data == people.wang_card for s in card_slip.steps)


def test_the_voucher_prints_the_date_it_can_be_collected_by_and_a_reprint_the_same(center, people):
    app = center.app
    result = gifts.redeem_gift(app, people.wang_card, "TOWEL", request_id="slip-date")
    view = members.show_member(app, card_no=people.wang_card)
    assert result.voucher_valid_until is not None
    printed = f"有效期至 {result.voucher_valid_until.isoformat()}"
    assert printed in texts(slips.gift_voucher(slips.header(app), result, view, app.tz, 32)[0])
    reprint = gifts.last_redemption(app)
    assert reprint is not None and reprint.voucher_valid_until == result.voucher_valid_until
    assert printed in texts(slips.gift_voucher(slips.header(app), reprint, view, app.tz, 32)[0])


def _register(center, phone: str):
    from edge.station.api import NewMember

    return center.register(NewMember(phone=phone, consent=True), request_id=f"reg-{phone}")


def _printer(center):
    assert center.simulator is not None
    return center.simulator.printer


def test_with_an_empty_dispenser_the_slip_is_the_card_a_qr_the_kiosk_reads(center):
    printer = _printer(center)
    center.simulator.dispenser_empty()
    start = len(printer.output)
    outcome = _register(center, "13912345678")
    assert not outcome.card.dispensed and outcome.card.slip.printed
    slip = printer.printed[-1]
    card_no = outcome.card.card_no
    assert [s.data for s in slip.steps if isinstance(s, Qr)] == [card_no]
    assert [s.data for s in slip.steps if isinstance(s, Barcode)] == [card_no]
    assert "服务台领取实体卡" in texts(slip)
    sent = bytes(printer.output[start:])
    qr_store = b"\x1d(k" + (len(card_no) + 3).to_bytes(2, "little") + b"1P0" + card_no.encode()
    assert qr_store in sent  # the printer's own QR command carries the card number
    # what the camera reads off that QR identifies the new member at the kiosk
    assert center.identify(card_no).card_no == card_no


def test_a_dispensed_card_gets_a_slip_with_its_barcode_and_no_qr(center):
    printer = _printer(center)
    center.simulator.customer_takes_card_later(0.2)
    outcome = _register(center, "13912345679")
    assert outcome.card.dispensed
    slip = printer.printed[-1]
    assert not [s for s in slip.steps if isinstance(s, Qr)]
    assert [s.data for s in slip.steps if isinstance(s, Barcode)] == [outcome.card.card_no]


def _raw_phone(phone: str):
    """A member whose phone reached the layout unmasked (a caller's mistake)."""
    return dataclasses.replace(sample_member("2000000000015"), phone_masked=phone)


def test_phone_numbers_are_masked_on_every_slip():
    slip = slips.new_card_slip(HEADER, _raw_phone("13812345678"), 100, 48)
    data = encode_receipt(slip, PROFILES["generic-80"])
    assert b"138****5678" in data
    assert b"13812345678" not in data
    other = slips.new_card_slip(HEADER, _raw_phone("+86 138-1234-5678"), 100, 48)
    assert b"1234" not in encode_receipt(other, PROFILES["generic-80"])


def test_a_number_the_services_masked_already_is_printed_as_it_is():
    for masked in ("138****8000", "*******8000"):
        assert mask_phone(masked) == masked
    slip = slips.new_card_slip(HEADER, _raw_phone("138****8000"), 0, 48)
    data = encode_receipt(slip, PROFILES["generic-80"])
    assert b"138****8000" in data
    # anything else with stars in it is still masked, all but its last four characters
    assert mask_phone("13812345678*") == "********678*"
    assert mask_phone("138*1234") == "****1234"


def test_gift_voucher_qr_carries_the_signed_code_readable_by_our_scanner():
    code = "GV1.S001.K01.000042.5f3a9c"
    result = dataclasses.replace(sample_redemption(), voucher_code=code)
    (voucher,) = slips.gift_voucher(HEADER, result, sample_member(), TZ, 48)
    assert b"\x1d(k" + bytes([len(code) + 3, 0]) + b"1P0" + code.encode() in encode_receipt(
        voucher, PROFILES["generic-80"]
    )
    image = np.asarray(render_preview(voucher, PROFILES["generic-80"]).convert("L"))
    assert code in [c.text for c in CodeDecoder().decode(image)]


def _coupon(min_spend_cents: int | None) -> bytes:
    coupon = slips.coupon(
        HEADER, "生鲜满减券", "¥10.00", "CP-S001-000917", "2026-12-15", (), 48, min_spend_cents
    )
    return encode_receipt(coupon, PROFILES["generic-80"])


def test_a_coupon_says_its_minimum_spend_only_when_it_has_one():
    assert "满¥50.00可用".encode("gb18030") in _coupon(5000)
    assert "满¥".encode("gb18030") not in _coupon(None)
    assert "满¥".encode("gb18030") not in _coupon(0)
    assert len(_coupon(None)) < len(_coupon(5000))


@pytest.mark.parametrize(
    ("kind", "value", "percent", "gives"),
    [
        ("amount_off", 500, 0, "¥5.00"),
        ("threshold_off", 1000, 0, "¥10.00"),
        ("percent_off", 0, 10, "9折"),
        ("percent_off", 0, 15, "85折"),
        ("gift", 0, 0, "五常大米"),
    ],
)
def test_a_wallet_coupon_prints_what_it_gives_and_a_code_our_scanner_reads(
    kind: str, value: int, percent: int, gives: str
) -> None:
    # a signed code as HQ makes them: some 160 characters
    code = sign_voucher(Ed25519PrivateKey.generate(), "coupon", "SPRING.01JXYZABCDEFGH", "HQ")
    tile = CouponTile(
        "SPRING.01JXYZ", "春季会员券", kind, value, 10_000, percent, "五常大米",
        date(2027, 3, 31), True,
    )  # fmt: skip
    slip = slips.wallet_coupon(HEADER, tile, code, "8800000000018", 48)
    data = encode_receipt(slip, PROFILES["generic-80"])
    assert gives.encode("gb18030") in data
    assert b"2027-03-31" in data and b"0018" in data
    assert b"8800000000018" not in data  # the slip shows the card's last four digits only
    assert ("满¥100.00可用".encode("gb18030") in data) == (kind == "threshold_off")
    image = np.asarray(render_preview(slip, PROFILES["generic-80"]).convert("L"))
    assert code in [c.text for c in CodeDecoder().decode(image)]


test_layout_encodes_without_replacement_characters, test_preview_is_as_wide_as_the_paper = (
    receipt_contract(SAMPLES)
)


def test_gallery_writes_both_widths_of_every_layout(tmp_path):
    written = write_gallery(tmp_path, SAMPLES)
    assert len(written) == 2 * len(SAMPLES) == 16


def test_the_statement_names_why_points_were_adjusted_and_refunds(center, people):
    from edge.services.corrections import adjust_points, refund_purchase
    from edge.services.points import accrue_purchase
    from edge.services.staff import StaffIdentity

    app = center.app
    clerk = StaffIdentity("c1", "clerk")
    accrue_purchase(app, people.wang_card, 20_000, "SLIP-R1")
    adjust_points(app, people.wang_card, 30, "missed_points", "", clerk)
    adjust_points(app, people.wang_card, -5, "correction", "", clerk)
    refund_purchase(app, "SLIP-R1", "SLIP-RF1", 10_000)
    view = members.show_member(app, card_no=people.wang_card)
    printed = texts(slips.points_statement(slips.header(app), view, 32))
    assert all(word in printed for word in ("漏积分补录", "积分更正", "退货")), printed
    assert slips.history_word("adjustment", "not-a-reason") == "调整"
