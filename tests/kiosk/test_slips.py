"""Paper a member takes away shows the card's last four digits only; card slips show it all."""

from __future__ import annotations

from drivers.printer.document import Barcode, Text
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
