"""``python -m kiosk.demo --out DIR [--size WxH]``: a scripted tour of every journey.

It runs the real app on the simulators (starting a virtual display of the window's size when
there is no screen), touches it as a
person would, and writes a screenshot of each step (``screen-NN-what.png``) and a PNG of each
receipt printed (``receipt-NN-what.png``) to DIR.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kiosk.boot import window_size
from kiosk.driver import Driver

SIZE = (1280, 800)


def start_virtual_display(
    size: tuple[int, int] = SIZE, timeout: float = 10.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts Xvfb, its screen ``size``, on a display number it picks itself; returns it and
    the display's name.

    Xvfb picks the number and writes it to a pipe (``-displayfd``) once it accepts clients:
    two programs starting a virtual display at the same moment cannot pick the same number
    (and one of them end up drawing on the other's display).

    Raises:
        RuntimeError: Xvfb is missing or did not start within ``timeout`` seconds.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("no screen and no Xvfb: install the xvfb package (make deps)")
    read_end, write_end = os.pipe()
    try:
        screen_size = f"{size[0]}x{size[1]}x24"
        proc = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", screen_size, "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_end)
        write_end = -1
        answer = b""
        deadline = time.monotonic() + timeout
        while not answer.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:  # Xvfb exited, or the time is up
                proc.kill()
                proc.wait(timeout=10)
                raise RuntimeError("the virtual display did not start")
            answer += chunk
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    return proc, f":{int(answer)}"


@contextmanager
def screen(size: tuple[int, int] = SIZE) -> Iterator[str]:
    """The display to use: the current one, or a virtual one of ``size`` started here."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    try:
        proc, display = start_virtual_display(size)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    try:
        os.environ["DISPLAY"] = display
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Tour(Driver):
    """Touches the running app and keeps a numbered screenshot of each step."""

    def __init__(self, app: Any, center: Any, out: Path) -> None:
        super().__init__(app)
        self.center, self.out = center, out
        self.step = 0

    def until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """As :meth:`Driver.until`, then a moment more for the screen to settle."""
        value = super().until(condition, timeout, what or f"step {self.step}")
        self.pump(0.2)
        return value

    def shot(self, what: str) -> None:
        """Saves the window, once settled, as the tour's next numbered screenshot."""
        self.pump(0.25)
        self.step += 1
        self.save_png(self.out / f"screen-{self.step:02d}-{what}.png")


def play(tour: Tour, people: Any) -> None:
    app, sim = tour.app, tour.center.simulator
    tour.shot("attract")
    tour.tap("language")
    tour.shot("attract-english")
    tour.tap("language")
    sim.present_code(people.wang_card)
    tour.until(lambda: app.current == "member")
    tour.shot("points")
    tour.tap("checkin")
    tour.until(lambda: app.points_vm.notice)
    tour.shot("checked-in")
    tour.tap("birthday")
    tour.until(lambda: "birthday" in app.points_vm.notice)
    tour.shot("birthday-gift")
    tour.tap("gifts")
    tour.until(lambda: app.gifts_vm.gifts)
    tour.shot("gifts")
    tour.tap("gift-KETTLE")
    tour.shot("not-enough-points")
    tour.tap("gift-RICE5")
    tour.shot("confirm")
    tour.tap("confirm")
    tour.until(lambda: app.gifts_vm.stage == "done")
    tour.shot("redeemed")
    tour.tap("to-points")
    tour.tap("done")
    tour.tap("phone")
    tour.keys(people.li_phone)
    tour.tap("key-ok")
    tour.shot("phone-verify")
    tour.keys(people.li_card[-4:])
    tour.tap("key-ok")
    tour.until(lambda: app.current == "member")
    tour.shot("points-by-phone")
    sim.printer_out_of_paper()
    # The fault strip comes and goes with the health poll and moves the buttons: each change
    # is waited for before the next tap, or a tap could start on a button and end beside it.
    tour.until(lambda: app.fault, what="the fault strip")
    tour.tap("statement")
    tour.until(lambda: not app.points_vm.busy and app.points_vm.notice)
    tour.shot("printer-out-of-paper")
    tour.tap("done")
    tour.center.station.clear_faults()
    tour.until(lambda: not app.fault, what="the fault strip to go")
    tour.tap("register")
    tour.keys("13655556666")
    tour.tap("key-ok", "surname-陈", "title-ms")
    tour.shot("new-card-name")
    tour.tap("reg-next")
    tour.keys("19580412")
    tour.tap("key-ok")
    tour.keys(people.wang_phone)
    tour.tap("key-ok", "consent")
    tour.shot("new-card-terms")
    tour.tap("reg-next")
    tour.until(lambda: app.register_vm.step == "done")
    tour.shot("new-card-issued")
    tour.tap("to-points", "done")
    sim.dispenser_jam()
    tour.tap("register")
    tour.keys("13677778888")
    tour.tap("key-ok", "reg-skip", "reg-skip", "reg-skip", "consent", "reg-next")
    tour.until(lambda: app.register_vm.step == "done")
    tour.shot("dispenser-jam")
    tour.tap("to-points", "done")
    sim.present_code(people.zhao_card_blocked)
    tour.until(lambda: app.identify_vm.notice and not app.identify_vm.busy)
    tour.shot("blocked-card")
    tour.tap("staff")
    sim.present_code("STAFF:" + people.clerk_id)
    tour.until(lambda: app.staff_vm.field == "pin")
    tour.keys("9999")
    tour.tap("key-ok")
    tour.until(lambda: not app.staff_vm.busy and app.staff_vm.notice)
    tour.shot("wrong-staff-pin")
    tour.keys(people.clerk_pin)
    tour.tap("key-ok")
    tour.until(lambda: app.staff_vm.page == "menu")
    tour.shot("staff-menu")
    tour.tap("lost-card")
    tour.keys(people.zhao_phone)
    tour.tap("key-ok")
    tour.until(lambda: app.staff_vm.member is not None)
    tour.tap("verified")
    tour.shot("lost-card-verify")
    tour.tap("replace")
    tour.until(lambda: app.staff_vm.replacement is not None)
    tour.shot("lost-card-replaced")
    tour.tap("staff-menu", "restock")
    tour.until(lambda: app.staff_vm.gifts)
    tour.tap("restock-OIL-10")
    tour.until(lambda: not app.staff_vm.busy)
    tour.shot("restock")
    tour.tap("staff-menu", "reprint")
    tour.until(lambda: not app.staff_vm.busy)
    tour.tap("staff-menu", "clear-faults")
    tour.until(lambda: app.staff_vm.devices)
    tour.shot("devices")
    tour.tap("staff-menu", "report")
    tour.until(lambda: app.staff_vm.report is not None)
    tour.shot("daily-report")
    tour.tap("sign-out")
    tour.tap("logo", hold=app.settings.technician_gesture_s + 0.3)
    tour.keys(people.technician_id)
    tour.tap("key-ok")
    tour.keys(people.technician_pin)
    tour.tap("key-ok")
    tour.until(lambda: app.technician_vm.info is not None)
    tour.shot("technician")
    tour.tap("tech-exit")
    sim.present_code(people.li_card)
    tour.until(lambda: app.current == "member")
    tour.tap("large-text")
    tour.shot("large-text")
    tour.tap("large-text")
    tour.until(lambda: app.session.warning, timeout=app.settings.idle_warn_s + 5)
    tour.shot("idle-warning")
    tour.until(lambda: app.current == "attract", timeout=app.settings.idle_clear_s + 5)
    tour.shot("idle-cleared")
    # the member desk's corrections and handover, last, so the screenshots before keep
    # their numbers
    tour.tap("staff")
    tour.keys(people.clerk_id)
    tour.tap("key-ok")
    tour.keys(people.clerk_pin)
    tour.tap("key-ok")
    tour.until(lambda: app.staff_vm.page == "menu")
    tour.tap("adjust")
    tour.keys(people.wang_phone)
    tour.tap("key-ok")
    tour.until(lambda: app.staff_vm.member is not None)
    tour.tap("reason-goodwill")
    tour.keys("30")
    tour.shot("adjust-points")
    tour.tap("key-ok")
    tour.until(lambda: app.staff_vm.adjusted is not None)
    tour.shot("points-adjusted")
    tour.tap("staff-menu", "handover")
    tour.shot("gift-handover")
    tour.tap("sign-out")
    tour.until(lambda: app.current == "attract")
    # the member's coupons from HQ's campaigns (with no HQ to ask, the screen says so)
    sim.present_code(people.wang_card)
    tour.until(lambda: app.current == "member")
    tour.tap("coupons")
    tour.until(lambda: app.coupons_vm.state != "loading")
    tour.shot("coupons")
    tour.tap("coupons-done")
    tour.until(lambda: app.current == "attract")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk.demo", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--idle", type=float, default=4.0, help="idle warning after s (tour)")
    parser.add_argument("--size", type=window_size, default=SIZE, help="e.g. 1080x1920")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("screen-*.png"), *out.glob("receipt-*.png")]:
        old.unlink()
    from kiosk.boot import tune_allocator

    tune_allocator()
    with tempfile.TemporaryDirectory(prefix="kiosk-demo-") as tmp, screen(args.size):
        data, printed = Path(tmp) / "data", Path(tmp) / "receipts"
        from edge.config import KioskConfig, KioskUiConfig

        config = KioskConfig(
            ui=KioskUiConfig(
                fullscreen=False,
                touch_provider="mouse",
                idle_warn_s=args.idle,
                idle_clear_s=args.idle * 1.5,
                technician_gesture_s=1.0,
            )
        )
        from edge.station.seed import seed_demo
        from kiosk.__main__ import open_center, setup_logging

        center = open_center(data, simulate=True, receipts_dir=printed, config=config)
        try:
            people = seed_demo(center.app)
            from kiosk.boot import configure_kivy

            settings = center.ui_settings
            setup_logging(settings.log_dir)  # as python -m kiosk: the technician screen shows it
            configure_kivy(
                kivy_home=settings.cache_dir / "kivy",
                provider="mouse",
                fullscreen=False,
                size=args.size,
            )
            from kiosk.app import KioskApp

            app = KioskApp(center)
            Driver.prepare(app)
            tour = Tour(app, center, out)
            tour.pump(0.5)
            play(tour, people)
            app.dispatch("on_stop")
        finally:
            center.close()
        for n, png in enumerate(sorted(printed.glob("*.png")), start=1):
            title = png.stem.split("-", 1)[1]
            shutil.copyfile(png, out / f"receipt-{n:02d}-{title}.png")
    shots = len(list(out.glob("screen-*.png")))
    slips = len(list(out.glob("receipt-*.png")))
    print(f"demo tour: {shots} screenshots and {slips} receipts in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
