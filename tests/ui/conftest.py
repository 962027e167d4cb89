"""The real app under a virtual display: Xvfb started here, one Kivy window per test run.

Kivy can open one window per process, so the window lives for the session and every test
gets a fresh app (fresh data directory, seeded center, simulated devices) attached to it.
Touches go through Kivy's own input path (``UnitTestTouch``), hit-testing included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.config import KioskConfig, KioskUiConfig, parse_config
from edge.station.center import KioskCenter, open_center
from edge.station.seed import DemoPeople, seed_demo
from kiosk.driver import Driver
from tests.run_shared import run_folder
from tests.waiting import wait_for

SIZE = (1280, 800)
SCREEN = (1280, 1920)  # room for every supported window, portrait ones included


@pytest.fixture(scope="session")
def virtual_display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from kiosk.demo import start_virtual_display

    try:
        proc, display = start_virtual_display(SCREEN)
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


class Kiosk(Driver):
    """The running app with its center, the seeded people and hands for the screen."""

    def __init__(self, app: Any, center: KioskCenter, people: DemoPeople, data_dir: Path) -> None:
        super().__init__(app)
        self.center, self.people, self.data_dir = center, people, data_dir

    def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """``condition``'s first true value, the event loop turning meanwhile (frames drawn,
        clock events run); fails naming ``what`` and the screen's texts after ``timeout``."""
        self.pump(0.02)  # what a tap set going has a turn of the loop before the first look
        try:
            return wait_for(condition, timeout, what, every=0.02, step=self.pump)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; screen: {self.texts()}") from None

    def find(self, tid: str) -> Any:
        try:
            return super().find(tid)
        except LookupError as exc:
            raise AssertionError(str(exc)) from None

    def tap(self, *tids: str, hold: float = 0.03) -> None:
        try:
            super().tap(*tids, hold=hold)
        except LookupError as exc:
            raise AssertionError(str(exc)) from None

    def type_digits(self, digits: str) -> None:
        self.keys(digits)

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
    (cutting them down takes seconds, once per data directory). The test processes of one
    run (pytest-xdist workers) share it: the first to need it makes it, the others wait."""
    return run_folder(tmp_path_factory, "subset-fonts")


@contextmanager
def _fonts_of_the_run(font_cache: Path, fonts: Path) -> Iterator[None]:
    """Around a new app: its fonts copied from ``font_cache`` when the run has them, else
    (the run's first app) copied there from the app, other processes waiting meanwhile."""
    done = font_cache / "complete"
    with contextlib.ExitStack() as stack:
        if not done.exists():
            lock = stack.enter_context((font_cache / "lock").open("w"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if done.exists():
            shutil.copytree(font_cache / "fonts", fonts, dirs_exist_ok=True)
        yield
        if not done.exists():
            shutil.copytree(fonts, font_cache / "fonts", dirs_exist_ok=True)
            done.touch()


@pytest.fixture
def make_kiosk(
    virtual_display: str, tmp_path: Path, font_cache: Path
) -> Iterator[Callable[..., Kiosk]]:
    made: list[Kiosk] = []

    def make(data_dir: Path | None = None, **ui: Any) -> Kiosk:
        """A kiosk app over a fresh data directory, or over ``data_dir`` with the
        configuration it holds (a kiosk of a chain, with its broker and HQ) and ``ui``."""
        data = data_dir or tmp_path / f"kiosk{len(made)}"
        config = _ui_config(**ui)
        if data_dir is not None:
            held = parse_config((data_dir / "config.toml").read_text())
            config = held.model_copy(update={"ui": config.ui})
        center = open_center(data, simulate=True, receipts_dir=data / "receipts", config=config)
        people = seed_demo(center.app)
        from kiosk.app import KioskApp

        with _fonts_of_the_run(font_cache, center.ui_settings.cache_dir / "fonts"):
            app = KioskApp(center)
            Driver.prepare(app)
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
