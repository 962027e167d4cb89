"""Prints and dispenses hold the update lock: an update waits for them, they wait for it."""

from __future__ import annotations

import threading

import pytest

from drivers.printer import receipts
from edge.lifecycle import busy


@pytest.fixture
def center(center):
    """The station's center, holding a slip for an update only briefly."""
    center.station.hold_timeout_s = 0.2
    return center


def _slip(center):
    head = receipts.ReceiptHeader("店", "S001", "K001", "2026-11-23 10:00")
    page = receipts.TechnicianTestPage(head, "sim", 80, "gb18030", ("ok",))
    return receipts.technician_test_page(page, center.station.columns)


def test_while_an_update_holds_the_lock_prints_and_dispenses_are_refused(center):
    data = center.app.data_dir
    with busy.exclusive(data, timeout=1):
        assert center.station.print_receipt(_slip(center)).problem == "updating"
        assert center.station.dispense_card() == (False, "updating")
    assert center.simulator.receipts() == []
    assert center.station.print_receipt(_slip(center)).printed  # after it, they work again
    assert center.station.dispense_card() == (True, "")


def test_an_update_waits_for_a_print_in_progress_and_says_what_it_waits_for(center):
    data = center.app.data_dir
    printing, finish = threading.Event(), threading.Event()
    real = center.station.printer.print_receipt

    def slow_print(receipt):
        printing.set()
        finish.wait(5)
        real(receipt)

    center.station.printer.print_receipt = slow_print
    worker = threading.Thread(target=center.station.print_receipt, args=(_slip(center),))
    worker.start()
    assert printing.wait(5)
    with pytest.raises(busy.LockTimeout) as waited, busy.exclusive(data, timeout=0.2):
        pass
    assert "printing test-page" in waited.value.message
    finish.set()
    worker.join(5)
    with busy.exclusive(data, timeout=1):
        pass
    assert center.simulator.receipts() == ["test-page"]
