"""Every screen of the tour at every supported window size, landscape and portrait: nothing
reaches past the window, no text is larger than its box, no touch target is under 9 mm.

The tour (the demo's) is played once; at each of its steps the window takes each size in
turn and the screen is checked there, so one walk covers every screen at every size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.demo import Tour, play
from kiosk.driver import Driver
from tests.ui.conftest import Kiosk

# The tour's own size last: the walk goes on from there.
SIZES = ((1024, 600), (800, 480), (720, 1280), (1080, 1920), (1280, 800))


class LayoutTour(Tour):
    """The demo's tour, checking the layout at every size where the demo takes a picture."""

    def __init__(self, kiosk: Kiosk) -> None:
        super().__init__(kiosk.app, kiosk.center, Path("."))
        self.faults: list[str] = []

    def shot(self, what: str) -> None:
        from kivy.base import EventLoop
        from kivy.core.window import Window

        home, session = tuple(Window.size), self.app.session
        idle = session.idle_s  # the checks take no customer's time
        assert home == SIZES[-1]
        for size in SIZES:
            Window.size = size

            def resized(size: tuple[int, int] = size) -> bool:
                return tuple(Window.size) == size

            Driver.until(self, resized, 5, f"a {size[0]}x{size[1]} window")
            # Layouts and text textures follow in the next frames: checked once two frames
            # in a row find the same.
            found: list[str] | None = None
            for _ in range(10):
                EventLoop.idle()
                before, found = found, self.layout_faults()
                if found == before:
                    break
            if found:  # a last look, in case a frame still to come moves things
                self.pump(0.5)
                found = self.layout_faults()
            session.idle_s = idle
            assert self.app.portrait == (size[1] > size[0])
            self.faults += [f"{what} at {size[0]}x{size[1]}: {f}" for f in found or []]
        self.step += 1


@pytest.mark.slow
def test_every_screen_fits_every_supported_size(make_kiosk) -> None:
    kiosk = make_kiosk(idle_warn_s=4.0, idle_clear_s=6.0, technician_gesture_s=1.0)
    tour = LayoutTour(kiosk)
    play(tour, kiosk.people)
    assert tour.step >= 25  # every screen of the tour was checked
    assert not tour.faults, "\n".join(tour.faults)
