"""``kiosk demo``: the scripted tour of every journey, run the way the appliance runs Python.

The tour runs in its own process with no display of ours (it starts a virtual one itself, as
``make run`` does on a machine with no screen) and optimized as ``member-kiosk.service``
runs the touchscreen: docstrings and asserts stripped, so nothing the app or its libraries
do may depend on them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edge.lifecycle.bytecode import OPTIMIZE

# one screenshot per step; the failure paths the touchscreen must explain among them
STEPS = (
    "attract",
    "attract-english",
    "points",
    "checked-in",
    "birthday-gift",
    "gifts",
    "not-enough-points",
    "confirm",
    "redeemed",
    "phone-verify",
    "points-by-phone",
    "printer-out-of-paper",
    "new-card-name",
    "new-card-terms",
    "new-card-issued",
    "dispenser-jam",
    "blocked-card",
    "wrong-staff-pin",
    "staff-menu",
    "lost-card-verify",
    "lost-card-replaced",
    "restock",
    "devices",
    "daily-report",
    "technician",
    "large-text",
    "idle-warning",
    "idle-cleared",
    "adjust-points",
    "points-adjusted",
    "gift-handover",
    "coupons",
)
RECEIPTS = {"gift-voucher", "new-card", "card-replacement", "staff-daily-report"}


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path.name
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.slow
def test_the_demo_tour_plays_every_journey_optimized_without_a_screen(tmp_path: Path) -> None:
    out = tmp_path / "tour"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONOPTIMIZE"] = str(OPTIMIZE)
    run = subprocess.run(
        [sys.executable, "-m", "kiosk.demo", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    screens = sorted(out.glob("screen-*.png"))
    assert [p.stem.split("-", 2)[2] for p in screens] == list(STEPS)
    assert {_png_size(p) for p in screens} == {(1280, 800)}
    receipts = sorted(out.glob("receipt-*.png"))
    assert {p.stem.split("-", 2)[2] for p in receipts} == RECEIPTS
    for receipt in receipts:
        width, height = _png_size(receipt)
        assert width >= 384 and height > 300, receipt.name  # at least a 58 mm roll's width
    assert f"{len(STEPS)} screenshots and {len(receipts)} receipts in {out}" in run.stdout
