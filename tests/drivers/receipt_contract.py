"""What every receipt layout must do on every printer profile, whoever's layout it is: the
driver's test page (tests/drivers/test_layouts.py) and the member center's slips
(tests/kiosk/test_slips.py) bind these tests to their samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from drivers.printer import PROFILES, encode_receipt, render_preview
from drivers.printer.gallery import Sample


def receipt_contract(samples: Mapping[str, Sample]) -> tuple[Callable[..., Any], ...]:
    """The contract's tests over ``samples``, to assign to ``test_*`` names in a module."""

    @pytest.mark.parametrize("layout", sorted(samples))
    @pytest.mark.parametrize("profile", sorted(PROFILES))
    def encodes_without_replacement_characters(layout: str, profile: str) -> None:
        chosen = PROFILES[profile]
        data = encode_receipt(samples[layout](chosen.columns), chosen)
        assert data.startswith(b"\x1b@")
        assert data.endswith(b"\x1dVB\x00")
        if chosen.encoding in ("gb18030", "gbk"):  # Big5 lacks simplified glyphs (员); raster
            assert b"?" not in data  # images hold any byte, 0x3F included
        assert b"13812345678" not in data  # no phone number in full

    @pytest.mark.parametrize("layout", sorted(samples))
    def preview_is_as_wide_as_the_paper(layout: str) -> None:
        for mm, columns in ((58, 32), (80, 48)):
            image = render_preview(samples[layout](columns), PROFILES[f"generic-{mm}"])
            assert image.width == PROFILES[f"generic-{mm}"].dots + 32
            assert image.height > 300

    return encodes_without_replacement_characters, preview_is_as_wide_as_the_paper
