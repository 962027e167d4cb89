"""Every layout on every printer profile: no unprintable character, a cut at the end."""

from __future__ import annotations

import pytest

from drivers.printer import PROFILES, SimulatedPrinter, encode_receipt, render_preview
from drivers.printer.gallery import SAMPLES, write_gallery


@pytest.mark.parametrize("layout", sorted(SAMPLES))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_layout_encodes_without_replacement_characters(layout, profile):
    chosen = PROFILES[profile]
    receipt = SAMPLES[layout](chosen.columns)
    data = encode_receipt(receipt, chosen)
    assert data.startswith(b"\x1b@")
    assert data.endswith(b"\x1dVB\x00")
    if chosen.encoding in ("gb18030", "gbk"):  # Big5 lacks simplified glyphs (员); raster
        assert b"?" not in data  # images hold any byte, 0x3F included
    assert b"13812345678" not in data


@pytest.mark.parametrize("layout", sorted(SAMPLES))
def test_preview_is_as_wide_as_the_paper(layout):
    for mm, columns in ((58, 32), (80, 48)):
        image = render_preview(SAMPLES[layout](columns), PROFILES[f"generic-{mm}"])
        assert image.width == PROFILES[f"generic-{mm}"].dots + 32
        assert image.height > 300


def test_simulator_keeps_bytes_and_preview_of_each_receipt(tmp_path):
    printer = SimulatedPrinter(PROFILES["generic-58"], output_dir=tmp_path)
    receipt = SAMPLES["coupon"](32)
    printer.print_receipt(receipt)
    assert (tmp_path / "0001-coupon.bin").read_bytes() == encode_receipt(
        receipt, PROFILES["generic-58"]
    )
    assert (tmp_path / "0001-coupon.png").stat().st_size > 1000


def test_gallery_writes_both_widths_of_every_layout(tmp_path):
    written = write_gallery(tmp_path)
    assert len(written) == 2 * len(SAMPLES) == 14
