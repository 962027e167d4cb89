"""The panels the app knows, the 9 mm touch target in pixels, window sizes as typed, and the
connected display as the kernel reports it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.config import KioskUiConfig
from edge.station.displays import connected_size, known_panel, min_target_px, parse_size


def test_a_target_is_9_mm_on_each_known_panel() -> None:
    assert round(min_target_px(800, 480)) == 47  # Raspberry Pi Touch Display
    assert round(min_target_px(720, 1280)) == 74  # Touch Display 2, portrait
    assert round(min_target_px(1080, 1920)) == 36  # 21.5 inch kiosk
    assert round(min_target_px(1080, 1920, 398, 708)) == 24  # a 32 inch one, configured
    assert round(min_target_px(1366, 768)) == 34  # unknown: 96 dpi
    panel = known_panel(720, 1280)
    assert panel is not None and "Touch Display 2" in panel.name
    assert known_panel(1280, 720) is None


@pytest.mark.parametrize(("text", "size"), [("1080x1920", (1080, 1920)), (" 800X480 ", (800, 480))])
def test_a_window_size_is_read_as_typed(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1080*1920", "WIDTHxHEIGHT"),
        ("x480", "WIDTHxHEIGHT"),
        ("-800x480", "WIDTHxHEIGHT"),
        ("100x100", "from 480 to 3840"),
        ("800x99999", "from 480 to 3840"),
    ],
)
def test_a_bad_window_size_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_size(text)


def test_the_connected_display_comes_from_the_kernel(tmp_path) -> None:
    for name, status, modes in (
        ("card1-DSI-1", "disconnected", "800x480\n"),
        ("card1-HDMI-A-1", "connected", "1920x1080\n1280x720\n"),
        ("card1-HDMI-A-2", "connected", "1024x600\n"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status").write_text(status + "\n")
        (tmp_path / name / "modes").write_text(modes)
    assert connected_size(tmp_path) == ("HDMI-A-1", (1920, 1080))
    assert connected_size(tmp_path / "nothing") is None


def test_the_panel_is_described_whole_or_not_at_all() -> None:
    assert KioskUiConfig(width=720, height=1280, rotation=90).rotation == 90
    with pytest.raises(ValidationError, match="panel_width_mm and panel_height_mm"):
        KioskUiConfig(panel_width_mm=398)
    with pytest.raises(ValidationError):
        KioskUiConfig.model_validate({"rotation": 45})
