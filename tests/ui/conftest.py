"""The real app under a virtual display: Xvfb started here, one Kivy window per test run.

Kivy can open one window per process, so the window lives for the session and every test
gets a fresh app (fresh data directory, seeded center, simulated devices) attached to it.
Touches go through Kivy's own input path (``UnitTestTouch``), hit-testing included.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.config import KioskConfig, KioskUiConfig
from edge.station.center import KioskCenter, open_center
from edge.station.seed import DemoPeople, seed_demo
from tests.waiting import wait_for

SIZE = (1280, 800)


@pytest.fixture(scope="session")
def virtual_display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from kiosk.demo import start_virtual_display

    try:
        proc, display = start_virtual_display()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (make deps installs the xvfb package)")
    os.environ["DISPLAY"] = display
    from kiosk.boot import configure_kivy

    configure_kivy(
        kivy_home=tmp_path_factory.mktemp("kivy"),
        provider="mouse",
        fullscreen=False,
        size=SIZE,
    )
    yield display
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class Kiosk:
    """The running app with its center, the seeded people and hands for the screen."""

    app: Any
    center: KioskCenter
    people: DemoPeople
    data_dir: Path

    # ---- driving the event loop -------------------------------------------------------
    def pump(self, seconds: float = 0.1) -> None:
        from kivy.base import EventLoop

        end = time.monotonic() + seconds
        while True:
            EventLoop.idle()
            if time.monotonic() >= end:
                return
            time.sleep(1 / 120)

    def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """``condition``'s first true value, the event loop turning meanwhile (frames drawn,
        clock events run); fails naming ``what`` and the screen's texts after ``timeout``."""
        self.pump(0.02)  # what a tap set going has a turn of the loop before the first look
        try:
            return wait_for(condition, timeout, what, every=0.02, step=self.pump)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; screen: {self.texts()}") from None

    # ---- finding and touching ---------------------------------------------------------
    def widgets(self) -> list[Any]:
        from kivy.core.window import Window

        found: list[Any] = []
        stack = list(Window.children)
        while stack:
            widget = stack.pop()
            found.append(widget)
            stack.extend(widget.children)
        return found

    def find(self, tid: str) -> Any:
        matches = [w for w in self.widgets() if getattr(w, "tid", None) == tid]
        assert matches, f"no widget {tid!r} on screen {self.app.current}"
        assert len(matches) == 1, f"{len(matches)} widgets named {tid!r}"
        return matches[0]

    def has(self, tid: str) -> bool:
        return any(getattr(w, "tid", None) == tid for w in self.widgets())

    def texts(self) -> str:
        return " | ".join(
            w.text for w in self.widgets() if isinstance(getattr(w, "text", None), str) and w.text
        )

    def tap(self, tid: str, hold: float = 0.0) -> None:
        """A finger on the widget's centre, through Kivy's input path."""
        from kivy.tests.common import UnitTestTouch

        widget = self.find(tid)
        assert not widget.disabled, f"{tid} is disabled"
        x, y = widget.to_window(*widget.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        self.pump(hold or 0.03)
        touch.touch_up()
        self.pump(0.05)

    def type_digits(self, digits: str) -> None:
        for digit in digits:
            self.tap(f"key-{digit}")

    def notice(self) -> str:
        screen = self.app.screens.manager.current_screen
        return " ".join(
            w.text for w in self.widgets() if type(w).__name__ == "Notice" and w.text
        ) or (screen.vm.notice if screen and screen.vm else "")

    def scan(self, text: str) -> None:
        assert self.center.simulator is not None
        self.center.simulator.present_code(text)


def _ui_config(**ui: Any) -> KioskConfig:
    return KioskConfig(ui=KioskUiConfig(fullscreen=False, touch_provider="mouse", **ui))


@pytest.fixture(scope="session")
def font_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset fonts, made by the first app of the run and copied into every later one
    (cutting them down takes seconds, once per data directory)."""
    return tmp_path_factory.mktemp("fonts")


@pytest.fixture
def make_kiosk(
    virtual_display: str, tmp_path: Path, font_cache: Path
) -> Iterator[Callable[..., Kiosk]]:
    made: list[Kiosk] = []

    def make(**ui: Any) -> Kiosk:
        data = tmp_path / f"kiosk{len(made)}"
        center = open_center(
            data, simulate=True, receipts_dir=data / "receipts", config=_ui_config(**ui)
        )
        people = seed_demo(center.app)
        from kiosk.app import KioskApp

        fonts = center.ui_settings.cache_dir / "fonts"
        if any(font_cache.iterdir()):
            shutil.copytree(font_cache, fonts, dirs_exist_ok=True)
        app = KioskApp(center)
        app._run_prepare()
        if not any(font_cache.iterdir()):
            shutil.copytree(fonts, font_cache, dirs_exist_ok=True)
        kiosk = Kiosk(app, center, people, data)
        made.append(kiosk)
        kiosk.pump(0.3)
        return kiosk

    yield make
    from kivy.core.window import Window

    for kiosk in made:
        kiosk.app.dispatch("on_stop")
        for child in list(Window.children):
            Window.remove_widget(child)
        kiosk.center.close()


@pytest.fixture
def kiosk(make_kiosk: Callable[..., Kiosk]) -> Kiosk:
    return make_kiosk()
