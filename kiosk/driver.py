"""Driving the running app by touch: the demo tour, the UI tests and the start-up benchmark.

One driver for all three. It starts the app without ``App.run()``'s own loop (the one place
that calls Kivy's ``App._run_prepare``), turns the event loop by hand, finds widgets by their
``tid`` and touches them through Kivy's input path, hit-testing included, and saves what the
window shows. Kivy's own test touch lives in ``kivy.tests.common``, which imports pytest: not
something the appliance has, nor memory the benchmark's tour should be charged for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def finger(x: float, y: float) -> Any:
    """A touch at window position (x, y), for :meth:`Driver.tap`."""
    from kivy.base import EventLoop
    from kivy.input.motionevent import MotionEvent

    class Finger(MotionEvent):  # type: ignore[misc]
        def depack(self, args: dict[str, float]) -> None:
            self.sx, self.sy = args["x"], args["y"]
            super().depack(args)

    window = EventLoop.window
    args = {"x": x / (window.width - 1.0), "y": y / (window.height - 1.0)}
    touch = Finger("driver", 99, args, is_touch=True, type_id="touch")
    touch.profile = ["pos"]
    return touch


class Driver:
    """Touches the running app (``app``, a :class:`kiosk.app.KioskApp`) and reads its screen."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @staticmethod
    def prepare(app: Any) -> None:
        """Builds the app and shows its first screen, leaving the event loop to the caller."""
        app._run_prepare()

    # ---- the event loop ---------------------------------------------------------------
    def pump(self, seconds: float = 0.1) -> None:
        """Turns the event loop for ``seconds`` (at least once): frames, clock, input."""
        from kivy.base import EventLoop

        end = time.monotonic() + seconds
        while True:
            EventLoop.idle()
            if time.monotonic() >= end:
                return
            time.sleep(1 / 120)

    def until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """``condition``'s first true value, the loop turning meanwhile; ``TimeoutError``
        naming ``what``, the screen and its texts after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            self.pump(0.02)
            value = condition()
            if value:
                return value
            if time.monotonic() >= end:
                raise TimeoutError(
                    f"timed out after {timeout:.0f} s waiting for {what or 'the screen'} on "
                    f"{self.app.current}; screen: {self.texts()}"
                )

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
        """The one widget named ``tid`` on the window (an error if none or several)."""
        matches = [w for w in self.widgets() if getattr(w, "tid", None) == tid]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} widgets named {tid!r} on {self.app.current}")
        return matches[0]

    def has(self, tid: str) -> bool:
        return any(getattr(w, "tid", None) == tid for w in self.widgets())

    def texts(self) -> str:
        return " | ".join(
            w.text for w in self.widgets() if isinstance(getattr(w, "text", None), str) and w.text
        )

    def tap(self, *tids: str, hold: float = 0.03) -> None:
        """A finger on each widget's centre in turn, through Kivy's input path."""
        from kivy.base import EventLoop

        for tid in tids:
            touch = finger(*self._centre(tid))
            EventLoop.post_dispatch_input("begin", touch)
            self.pump(hold)
            EventLoop.post_dispatch_input("end", touch)
            del touch  # nothing here may keep a widget the tap took off the screen alive
            self.pump(0.08)

    def _centre(self, tid: str) -> tuple[float, float]:
        widget = self.find(tid)
        if widget.disabled:
            raise LookupError(f"{tid} is disabled on {self.app.current}")
        x, y = widget.to_window(*widget.center)
        return float(x), float(y)

    def keys(self, digits: str) -> None:
        self.tap(*(f"key-{d}" for d in digits))

    # ---- how the screen is laid out ------------------------------------------------------
    def layout_faults(self) -> list[str]:
        """What the current screen gets wrong at this window size, a line each: a widget
        (outside a scrolling area) reaching past the window, text larger than its box (cut
        off or spilling over), and a touch target smaller than the app's smallest
        (``touch_min``, 9 mm on the panel)."""
        from kivy.core.window import Window
        from kivy.uix.behaviors import ButtonBehavior
        from kivy.uix.label import Label
        from kivy.uix.scrollview import ScrollView

        width, height = Window.size
        smallest = float(self.app.touch_min)
        faults: list[str] = []
        stack: list[tuple[Any, bool]] = [(w, False) for w in Window.children]
        while stack:
            widget, scrolled = stack.pop()
            if widget.opacity == 0 or widget.width <= 0 or widget.height <= 0:
                continue  # not shown, nor anything in it
            stack.extend((child, scrolled or isinstance(widget, ScrollView))
                         for child in widget.children)  # fmt: skip
            name = _name(widget)
            x, y = widget.to_window(widget.x, widget.y)
            if not scrolled and (
                x < -1 or y < -1 or x + widget.width > width + 1 or y + widget.height > height + 1
            ):
                faults.append(
                    f"{name} at ({x:.0f}, {y:.0f}) size {widget.width:.0f}x{widget.height:.0f} "
                    f"reaches past the {width}x{height} window"
                )
            if isinstance(widget, Label) and widget.text.strip():
                tw, th = widget.texture_size
                if tw > widget.width + 1 or th > widget.height + 1:
                    faults.append(
                        f"{name}: text of {tw:.0f}x{th:.0f} in a box of "
                        f"{widget.width:.0f}x{widget.height:.0f}"
                    )
            small = min(widget.width, widget.height) < smallest - 0.5
            if isinstance(widget, ButtonBehavior) and not widget.disabled and small:
                faults.append(
                    f"{name}: a touch target of {widget.width:.0f}x{widget.height:.0f}, "
                    f"under {smallest:.0f} px (9 mm)"
                )
        return faults

    # ---- what the window shows --------------------------------------------------------
    def save_png(self, path: Path) -> None:
        """Draws the window once more and saves what it shows as a PNG.

        The frame is read straight from the window's own buffer, before it is shown: an
        offscreen framebuffer of the window's size would stay in the process (the GL driver
        does not give every one back) only for the screenshot's sake.
        """
        from kivy.core.window import Window
        from kivy.graphics.opengl import GL_RGB, GL_UNSIGNED_BYTE, glReadPixels

        width, height = (int(side) for side in Window.size)
        Window.dispatch("on_draw")
        pixels = glReadPixels(0, 0, width, height, GL_RGB, GL_UNSIGNED_BYTE)
        Window._win.save_bytes_in_png(str(path), pixels, width, height)


def _name(widget: Any) -> str:
    """A widget as a layout fault names it: its class and its ``tid`` or the start of its text."""
    label = getattr(widget, "tid", "") or str(getattr(widget, "text", "") or "")[:30]
    return f"{type(widget).__name__} {label!r}" if label else type(widget).__name__
