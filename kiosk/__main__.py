"""``python -m kiosk``: the member center on the touchscreen (``kiosk run`` starts this).

This is the composition root: it opens the edge's implementation of
:class:`edge.station.api.MemberCenter` (the app itself depends only on that interface; this
module and ``kiosk.demo`` are the only ones the import contracts let see the station's
implementation), configures Kivy for the screen and the touch provider, and runs the app.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

from edge.station.center import KioskCenter
from edge.station.center import open_center as open_kiosk_center
from edge.station.seed import seed_demo
from kiosk.boot import tune_allocator, window_size


def open_center(
    data_dir: Path | None, *, simulate: bool, receipts_dir: Path | None = None, **kw: Any
) -> KioskCenter:
    """The station of this kiosk; the app is handed it as a :class:`MemberCenter`."""
    return open_kiosk_center(data_dir, simulate=simulate, receipts_dir=receipts_dir, **kw)


def setup_logging(log_dir: Path) -> None:
    from edge.domain.text import LOG_FORMAT, EscapingFormatter

    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_dir / "kiosk.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # font subsetting at start-up logs every glyph id at INFO: lines of 50-90 kB that bury
    # what the technician screen's log is for
    logging.getLogger("fontTools").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk", description=__doc__)
    parser.add_argument("--sim", action="store_true", help="simulated hardware")
    parser.add_argument("--seed", action="store_true", help="seed a demo center if empty")
    parser.add_argument("--windowed", action="store_true", help="a window, not full screen")
    parser.add_argument("--size", type=window_size, help="window size, e.g. 1080x1920")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--receipts-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    tune_allocator()
    center = open_center(args.data_dir, simulate=args.sim, receipts_dir=args.receipts_dir)
    try:
        settings = center.ui_settings
        setup_logging(settings.log_dir)
        if args.seed:
            seed_demo(center.app)
        size = args.size or (settings.width, settings.height)
        from kiosk.boot import configure_kivy

        configure_kivy(
            kivy_home=settings.cache_dir / "kivy",
            # a desktop (simulated hardware) has a mouse; the appliance its touch device
            provider="mouse" if args.sim else settings.touch_provider,
            device=settings.touch_device,
            fullscreen=settings.fullscreen and not args.windowed,
            size=size,
            rotation=settings.rotation,
            touch_rotation=settings.touch_rotation,
            touch_invert_x=settings.touch_invert_x,
            touch_invert_y=settings.touch_invert_y,
        )
        from kiosk.app import KioskApp

        logging.getLogger(__name__).info(
            "starting the member center (%s hardware)", "simulated" if args.sim else "real"
        )
        KioskApp(center).run()
    finally:
        center.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    sys.exit(main())
