"""Paper a member takes away shows the card's last four digits only; card slips show it all."""

from __future__ import annotations

from drivers.printer.document import Barcode, Qr, Text
from edge.services import gifts, members
from edge.station import slips


def texts(receipt):
    return " ".join(step.text for step in receipt.steps if isinstance(step, Text))


def test_voucher_and_statement_mask_the_card_number(center, people):
    app = center.app
    result = gifts.redeem_gift(app, people.wang_card, "TOWEL", request_id="slip-test")
    voucher = slips.gift_voucher(app, result, "138****8000", 32)[0]
    assert people.wang_card not in texts(voucher)
    assert "*" * 9 + people.wang_card[-4:] in texts(voucher)
    view = members.show_member(app, card_no=people.wang_card)
    statement = slips.points_statement(app, view, 32)
    assert people.wang_card not in texts(statement)
    card_slip = slips.new_card_slip(app, view, 0, 32)
    assert people.wang_card in texts(card_slip)
    assert any(isinstance(s, Barcode) and s.data == people.wang_card for s in card_slip.steps)


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
