"""Cold start of the touchscreen to the attract screen, and resident memory after a full tour.

``python -m bench.startup [--sizes 1280x800,800x480,1080x1920]`` runs the app in fresh
processes under a virtual display (or the current one): the first start on an empty data
directory (schema, font subsetting), then, with 60 more gifts that have a picture each, at
each window size, a normal cold start (caches warm) and the demo tour of every journey; it
prints the times and the resident set size.
Targets: under 3 s to the attract screen, under 200 MB, at every size.

The tour ends on the attract screen; the resident set is read once the app has released
the other screens and handed their freed memory back (``KioskApp.memory_settled``), as it
does after every customer; the peak during the tour is printed too.
Then the same process serves customers (scan, points, the gift catalogue, done): a first run
of them fills what the app keeps for later ones (bounded caches: it grows by a few MB once),
then three more runs, with the resident set read after each: an appliance that runs for years
must come back to the same size after every customer, not creep up, so the largest of those
three readings may exceed the one after the first run by at most ``GROWTH_TOLERANCE_MB``.
Each process runs Python the way the appliance's ``member-kiosk.service`` does (its
``PYTHON*`` settings: optimized, no docstrings or asserts), from bytecode compiled up front as
the installer compiles it (``python -m edge.lifecycle.bytecode``): the appliance never compiles
a module at start, and a process that does keeps megabytes of the compiler's leftovers.
The simulated printer keeps each receipt's bytes but draws no PNG of it (``kiosk demo``
does): an appliance's printer has its own Chinese font, so its touchscreen process never
loads Pillow, NumPy or zxing-cpp, and neither does the measured one. The resident set is
broken down from ``/proc/self/smaps``: anonymous memory, file pages, and the part that is
the OpenGL driver's own code (on a desktop or under Xvfb that is Mesa's llvmpipe with LLVM,
which a Raspberry Pi's V3D GPU does not need).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START_TARGET_S = 3.0
RSS_TARGET_MB = 200.0
VISITS = 30
SIZES = ((1280, 800), (800, 480), (1080, 1920))
GIFTS = 60  # with a picture each, beside the demo's own
STEADY_RUNS = 3  # runs of VISITS customers after the first, each read
# more than this over the runs after the first is memory that creeps up with use
GROWTH_TOLERANCE_MB = 2.0


GL_DRIVER_FILES = ("libLLVM", "_dri.so", "libgallium")
ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd/member-kiosk.service"


def _rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _breakdown_mb() -> dict[str, float]:
    """Resident kB by kind of mapping, from ``/proc/self/smaps``, in MB."""
    kinds = {"anon_mb": 0, "file_mb": 0, "gl_driver_mb": 0}
    name = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:  # a mapping's first line: range perms ... path
            fields = rest.split()
            name = fields[4] if len(fields) > 4 else ""
        elif head == "Rss:":
            kb = int(rest.split()[0])
            if not name.startswith("/"):
                kinds["anon_mb"] += kb
            else:
                kinds["file_mb"] += kb
                if any(part in name for part in GL_DRIVER_FILES):
                    kinds["gl_driver_mb"] += kb
    return {key: kb / 1024 for key, kb in kinds.items()}


def _pss_mb() -> float:
    """Proportional set size: shared pages (the GL driver's code, which the X server maps
    too) counted in proportion to the processes that map them."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve(tour: Any, people: Any, visits: int) -> None:
    """``visits`` customers in turn: scan, points, the gift catalogue and back, done."""
    app, sim = tour.app, tour.center.simulator
    for visit in range(visits):
        sim.present_code(people.wang_card if visit % 2 else people.li_card)
        tour.until(lambda: app.current == "member")
        tour.tap("gifts")
        tour.until(lambda: app.current == "gifts" and not app.gifts_vm.busy)
        tour.tap("gifts-back", "done")
        tour.until(lambda: app.current == "attract")
        tour.pump(0.3)  # the released screens are collected and their memory handed back
    settled(tour)


def settled(tour: Any) -> None:
    """Waits on the attract screen until the app has handed the memory of the screens it
    released back to the system, as it does between customers."""
    app = tour.app
    tour.until(lambda: app.current == "attract" and app.memory_settled, what="memory handed back")


def child(data: Path, tour: bool, size: tuple[int, int]) -> None:
    """One app process: reports seconds from process start to the first attract frame."""
    started = float(os.environ["BENCH_T0"])
    from kiosk.__main__ import open_center
    from kiosk.boot import configure_kivy, tune_allocator

    tune_allocator()  # as python -m kiosk does
    center = open_center(data, simulate=True)
    settings = center.ui_settings
    configure_kivy(
        kivy_home=settings.cache_dir / "kivy", provider="mouse", fullscreen=False, size=size
    )
    from kivy.base import EventLoop

    from kiosk.app import KioskApp
    from kiosk.driver import Driver

    app = KioskApp(center)
    Driver.prepare(app)
    EventLoop.idle()  # the first frame, drawn
    assert app.current == "attract"
    result = {"start_s": time.time() - started}
    if tour:
        from edge.station.seed import seed_demo
        from kiosk.demo import Tour, play

        people = seed_demo(center.app)
        out = data / "tour"
        out.mkdir(exist_ok=True)
        # as the demo: a large window draws slower
        app.session.warn_s, app.session.clear_s = 4.0, 6.0
        guide = Tour(app, center, out)
        play(guide, people)
        settled(guide)
        rss, peak = _rss_mb()
        result |= {"rss_mb": rss, "peak_rss_mb": peak, "pss_mb": _pss_mb()} | _breakdown_mb()
        serve(guide, people, VISITS)
        result["rss_after_visits_mb"] = _rss_mb()[0]
        readings = []
        for _ in range(STEADY_RUNS):
            serve(guide, people, VISITS)
            readings.append(_rss_mb()[0])
        result["rss_steady_max_mb"] = max(readings)
    app.dispatch("on_stop")
    center.close()
    print("BENCH " + json.dumps(result), flush=True)


def add_pictured_gifts(data: Path, count: int) -> None:
    """``count`` gifts with a picture each (an 800x800 JPEG, scaled as the kiosk keeps it),
    priced after the demo's own so the tour's gifts stay at the top of the catalogue. Made
    here, not in the measured process, which never loads Pillow."""
    import io

    from PIL import Image, ImageDraw

    from edge.app import AppContext
    from edge.services.gifts import add_gift
    from edge.station.seed import seed_demo

    app = AppContext.open(data)
    try:
        seed_demo(app)  # the demo's people and gifts first: it seeds an empty center only
        for n in range(count):
            picture = Image.new("RGB", (800, 800), ((n * 53) % 256, (n * 97) % 256, 160))
            ImageDraw.Draw(picture).ellipse((120, 120, 680, 680), fill=(250, 240, 220))
            out = io.BytesIO()
            picture.save(out, format="JPEG", quality=85)
            add_gift(app, f"BENCH{n:02d}", f"礼品{n:02d}", 7000 + n, 10, image=out.getvalue())
    finally:
        app.close()


def unit_python_env(unit: Path = UNIT) -> dict[str, str]:
    """The ``PYTHON*`` variables the touchscreen's systemd unit sets."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition("=")
        if key == "Environment":
            for item in value.split():
                name, _, setting = item.strip('"').partition("=")
                if name.startswith("PYTHON"):
                    env[name] = setting
    return env


def compile_bytecode() -> None:
    """The interpreter's path and the project's packages, compiled as the installer does."""
    packages = [str(ROOT / name) for name in ("edge", "kiosk", "drivers", "bench")]
    subprocess.run(
        [sys.executable, "-m", "edge.lifecycle.bytecode", *packages],
        check=True,
        capture_output=True,
        timeout=1800,
    )


def run(data: Path, tour: bool, size: tuple[int, int] = SIZES[0]) -> dict[str, float]:
    env = dict(os.environ, BENCH_T0=repr(time.time())) | unit_python_env()
    command = [sys.executable, "-m", "bench.startup", "--child", str(data)]
    proc = subprocess.run(
        [*command, "1" if tour else "0", f"{size[0]}x{size[1]}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[6:]))
    raise RuntimeError(f"benchmark child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> int:
    import argparse

    from edge.station.displays import parse_size
    from kiosk.demo import screen

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    sizes = [parse_size(text) for text in parser.parse_args().sizes.split(",")]
    settings = " ".join(f"{k}={v}" for k, v in unit_python_env().items())
    print(f"the app as {UNIT.name} runs it ({settings}), bytecode compiled up front")
    compile_bytecode()
    room = (max(w for w, _ in sizes), max(h for _, h in sizes))
    passed = True
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp, screen(room):
        data = Path(tmp) / "data"
        first = run(data, tour=False)
        print(f"first start on an empty data dir (schema, fonts): {first['start_s']:.2f} s")
        add_pictured_gifts(data, GIFTS)
        print(f"{GIFTS} more gifts, each with a picture (as `kiosk gift add --image`)")
        for size in sizes:
            # each size's tour on a copy of the center as the first start left it: a tour
            # spends points and claims a birthday gift once
            here = Path(tmp) / f"data-{size[0]}x{size[1]}"
            shutil.copytree(data, here)
            warm = [run(here, tour=False, size=size)["start_s"] for _ in range(3)]
            toured = run(here, tour=True, size=size)
            passed = report(size, sorted(warm)[1], toured) and passed
    return 0 if passed else 1


def report(size: tuple[int, int], cold: float, toured: dict[str, float]) -> bool:
    """Prints one window size's figures; whether they are within the targets."""
    print(f"at {size[0]}x{size[1]}:")
    print(
        f"  cold start to the attract screen (median of 3):  {cold:.2f} s "
        f"(target < {START_TARGET_S:.0f} s) {'OK' if cold < START_TARGET_S else 'OVER'}"
    )
    rss = toured["rss_mb"]
    print(
        f"  resident memory after the full tour:           {rss:.0f} MB "
        f"(peak {toured['peak_rss_mb']:.0f} MB; target < {RSS_TARGET_MB:.0f} MB) "
        f"{'OK' if rss < RSS_TARGET_MB else 'OVER'}"
    )
    print(
        f"    of which anonymous {toured['anon_mb']:.0f} MB, file pages {toured['file_mb']:.0f} "
        f"MB (the OpenGL driver's code {toured['gl_driver_mb']:.0f} MB); "
        f"proportional set size {toured['pss_mb']:.0f} MB"
    )
    warm = toured["rss_after_visits_mb"]
    print(
        f"  {f'after {VISITS} more customers:':<47}{warm:.0f} MB ({warm - rss:+.1f} MB: what "
        "the app keeps for the next customers)"
    )
    growth = toured["rss_steady_max_mb"] - warm
    steady = growth < GROWTH_TOLERANCE_MB
    print(
        f"  {f'then {STEADY_RUNS * VISITS} more, the largest reading:':<47}"
        f"{toured['rss_steady_max_mb']:.0f} MB ({growth:+.1f} MB; more than "
        f"{GROWTH_TOLERANCE_MB:.0f} MB would be creep) {'OK' if steady else 'GROWING'}"
    )
    return cold < START_TARGET_S and rss < RSS_TARGET_MB and steady


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        from edge.station.displays import parse_size

        child(Path(sys.argv[2]), sys.argv[3] == "1", parse_size(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
