"""The touch panels member centers use, and how large a pixel is on each.

A touch target must stay at least :data:`MIN_TARGET_MM` wide and tall on the glass, whatever
the resolution: the app works out its smallest target in pixels from the panel's visible
size in millimetres, configured (``[ui] panel_width_mm`` and ``panel_height_mm``) or known
here from the resolution.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

MIN_TARGET_MM = 9.0
# A panel nobody described: a desktop monitor's 96 pixels to the inch.
DEFAULT_PX_PER_MM = 96 / 25.4


@dataclass(frozen=True)
class Panel:
    """A panel as it is mounted: its resolution and visible area (width x height)."""

    name: str
    width_px: int
    height_px: int
    width_mm: float
    height_mm: float


# The displays member centers are built with, as mounted (portrait ones upright).
KNOWN_PANELS = (
    Panel("Raspberry Pi Touch Display, 7 inch", 800, 480, 154.08, 85.92),
    Panel("7 inch 1024x600 HDMI touch panel", 1024, 600, 154.21, 85.92),
    Panel("10.1 inch 1280x800 touch panel", 1280, 800, 216.96, 135.60),
    Panel("Raspberry Pi Touch Display 2, 7 inch, portrait", 720, 1280, 87.48, 155.52),
    Panel("21.5 inch floor-standing kiosk, portrait", 1080, 1920, 267.84, 476.16),
)


def known_panel(width_px: int, height_px: int) -> Panel | None:
    """The known panel of this resolution (the smallest, where several share one)."""
    for panel in KNOWN_PANELS:
        if (panel.width_px, panel.height_px) == (width_px, height_px):
            return panel
    return None


def px_per_mm(
    width_px: float, height_px: float, width_mm: float = 0, height_mm: float = 0
) -> float:
    """Pixels to a millimetre on a window of ``width_px`` x ``height_px`` filling a panel of
    ``width_mm`` x ``height_mm`` (0: the known panel of that resolution, else 96 dpi)."""
    if width_mm > 0 and height_mm > 0:
        return min(width_px / width_mm, height_px / height_mm)
    panel = known_panel(round(width_px), round(height_px))
    if panel is None:
        return DEFAULT_PX_PER_MM
    return min(width_px / panel.width_mm, height_px / panel.height_mm)


def min_target_px(
    width_px: float, height_px: float, width_mm: float = 0, height_mm: float = 0
) -> float:
    """The smallest touch target, in pixels, on such a window: :data:`MIN_TARGET_MM`."""
    return MIN_TARGET_MM * px_per_mm(width_px, height_px, width_mm, height_mm)


def parse_size(text: str) -> tuple[int, int]:
    """``"1080x1920"`` as (1080, 1920); ``ValueError`` saying what is wrong otherwise."""
    width, sep, height = text.strip().lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise ValueError(f"window size {text[:40]!r}: write it as WIDTHxHEIGHT, e.g. 1080x1920")
    size = (int(width), int(height))
    if not all(480 <= side <= 3840 for side in size):
        raise ValueError(f"window size {text[:40]!r}: each side from 480 to 3840 pixels")
    return size


def connected_size(drm: Path = Path("/sys/class/drm")) -> tuple[str, tuple[int, int]] | None:
    """The first connected display's name and preferred mode (``("HDMI-A-1", (1920, 1080))``)
    as the kernel reports it, or None (no display, or no DRM here)."""
    for connector in sorted(drm.glob("card*-*")):
        try:
            if (connector / "status").read_text().strip() != "connected":
                continue
            mode = (connector / "modes").read_text().split()
        except OSError:
            continue
        if mode:
            with contextlib.suppress(ValueError):
                return connector.name.split("-", 1)[1], parse_size(mode[0].rstrip("i"))
    return None
