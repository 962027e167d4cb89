"""The library's own layout (the test page) on every printer profile: no unprintable
character, a cut at the end. The member center's slips are tested the same way with the
appliance (tests/kiosk/test_slips.py)."""

from __future__ import annotations

from drivers.printer import PROFILES, SimulatedPrinter, encode_receipt
from drivers.printer.gallery import SAMPLES, write_gallery
from tests.drivers.receipt_contract import receipt_contract

test_layout_encodes_without_replacement_characters, test_preview_is_as_wide_as_the_paper = (
    receipt_contract(SAMPLES)
)


def test_simulator_keeps_bytes_and_preview_of_each_receipt(tmp_path):
    printer = SimulatedPrinter(PROFILES["generic-58"], output_dir=tmp_path)
    receipt = SAMPLES["test-page"](32)
    printer.print_receipt(receipt)
    assert (tmp_path / "0001-test-page.bin").read_bytes() == encode_receipt(
        receipt, PROFILES["generic-58"]
    )
    assert (tmp_path / "0001-test-page.png").stat().st_size > 1000


def test_gallery_writes_both_widths_of_every_layout(tmp_path):
    written = write_gallery(tmp_path)
    assert len(written) == 2 * len(SAMPLES) == 2
