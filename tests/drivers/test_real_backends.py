"""Real backends: what they do without hardware (clear failures), and contracts with it.

Tests marked ``hardware`` run only where the device is attached and named by an environment
variable (KIOSK_TEST_CAMERA, KIOSK_TEST_PRINTER); elsewhere they skip.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from drivers.errors import DeviceUnavailableError
from drivers.health import HealthState
from drivers.printer import EscposPrinter, PrinterProfile, SimulatedPrinter
from drivers.printer.gallery import SAMPLES
from drivers.scanner.cameras import OpenCvCamera, Picamera2Camera

RULES = Path(__file__).resolve().parents[2] / "drivers" / "udev" / "99-member-kiosk.rules"


def test_unplugged_usb_camera_is_a_failed_health_not_a_hang():
    with pytest.raises(DeviceUnavailableError) as raised:
        OpenCvCamera("/dev/v4l/by-id/usb-no-such-camera-video-index0")
    assert raised.value.health.state is HealthState.FAILED
    assert raised.value.health.code == "disconnected"


def test_missing_picamera2_says_how_to_get_it():
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(DeviceUnavailableError) as raised:
            Picamera2Camera()
        assert "python3-picamera2" in raised.value.health.reason
        assert raised.value.health.code == "library_missing"
    else:
        pytest.skip("picamera2 is installed here")


def test_network_printer_that_is_not_there_fails_within_its_timeout():
    with pytest.raises(DeviceUnavailableError) as raised:
        EscposPrinter.open("network", "127.0.0.1:9", PrinterProfile(), 1.0)
    assert raised.value.health.code == "disconnected"


def test_file_printer_writes_the_exact_bytes_and_has_unknown_status(tmp_path):
    target = tmp_path / "lp0"
    target.touch()
    printer = EscposPrinter.open("file", str(target), PrinterProfile(), 1.0)
    reference = SimulatedPrinter(PrinterProfile())
    receipt = SAMPLES["test-page"](48)
    printer.print_receipt(receipt)
    reference.print_receipt(receipt)
    printer.close()
    assert target.read_bytes() == bytes(reference.output)
    assert printer.health().code == "no_status"


@pytest.mark.hardware
def test_real_camera_delivers_frames():
    source = os.environ.get("KIOSK_TEST_CAMERA")
    if not source:
        pytest.skip("no camera attached (set KIOSK_TEST_CAMERA)")
    camera = OpenCvCamera(source)
    try:
        assert camera.read_frame(2.0).ndim == 3
        assert camera.health().state is HealthState.OK
    finally:
        camera.close()


def test_udev_rules_are_well_formed():
    rule_lines = [
        line for line in RULES.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert rule_lines
    token = re.compile(r'^\s*[A-Z_]+(\{[A-Za-z_]+\})?(==|!=|\+=|=)"[^"]*"\s*$')
    for line in rule_lines:
        for part in line.split(","):
            assert token.match(part), f"bad udev token {part!r} in {line!r}"
    names = {m for line in rule_lines for m in re.findall(r'SYMLINK\+="([^"]+)"', line)}
    assert {"kiosk-dispenser", "kiosk-scanner", "kiosk-printer", "kiosk-camera"} <= names
