"""Devices built from configuration; the configuration refuses what it does not know."""

from __future__ import annotations

import ast
import subprocess
import sys

import cv2
import numpy as np
import pydantic
import pytest

from drivers.config import HardwareConfig, PrinterConfig, ScannerConfig
from drivers.dispenser import DispenseError
from drivers.dispenser.protocol import frame
from drivers.factory import open_devices, open_printer, profile_for
from drivers.health import HealthState
from drivers.printer import SimulatedPrinter
from drivers.scanner import SimulatedCamera
from tests.drivers.conftest import BARCODES, barcode_image


def test_default_hardware_is_all_simulated_and_healthy():
    devices = open_devices(HardwareConfig())
    try:
        assert isinstance(devices.printer, SimulatedPrinter)
        assert devices.printer.health().state is HealthState.OK
        assert devices.dispenser.health().state is HealthState.OK
        assert devices.panel.health().state is HealthState.OK
        devices.dispenser.dispense()
        assert devices.dispenser.status().card_at_mouth
    finally:
        devices.close()


def test_unknown_keys_are_refused():
    with pytest.raises(pydantic.ValidationError):
        HardwareConfig.model_validate({"printer": {"backend": "sim", "colour": "red"}})


def test_printer_profile_follows_config(tmp_path):
    config = PrinterConfig(paper_mm=58, encoding="gbk", kanji_mode=False, sim_output=str(tmp_path))
    profile = profile_for(config)
    assert (profile.dots, profile.columns, profile.encoding, profile.kanji_mode) == (
        384,
        32,
        "gbk",
        False,
    )
    printer = open_printer(config)
    assert isinstance(printer, SimulatedPrinter) and printer.output_dir == tmp_path


def test_dispenser_protocol_example_in_the_guide():
    assert frame("ST") == bytes.fromhex("02 53 54 03 04")
    assert frame("S1100") == bytes.fromhex("02 53 31 31 30 30 03 50")


def test_simulated_camera_plays_a_video_file_in_a_loop(tmp_path):
    image = cv2.resize(barcode_image("qrcode-5/01.png"), (320, 320))
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 320))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG")
    blank = np.full_like(image, 255)
    for frame_image in (blank, image, image):
        writer.write(frame_image)
    writer.release()
    camera = SimulatedCamera([path], fps=1000)
    frames = [camera.read_frame(1.0) for _ in range(6)]
    assert len(frames) == 6 and frames[0].shape == (320, 320, 3)
    assert np.array_equal(frames[1], frames[4])  # looped: 3 frames, then again


IMAGE_LIBRARIES = ("cv2", "zxingcpp", "pyzbar", "numpy", "PIL")


def _loaded(script: str) -> list[str]:
    """The image libraries a fresh interpreter has loaded after running ``script``."""
    probe = script + f"\nimport sys\nprint([m for m in {IMAGE_LIBRARIES!r} if m in sys.modules])\n"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return list(ast.literal_eval(run.stdout.strip().splitlines()[-1]))


def test_printing_dispensing_and_a_scan_engine_load_no_image_library():
    script = """
from drivers.config import HardwareConfig
from drivers.dispenser import SerialDispenser, VirtualDispenserLink
from drivers.factory import open_printer
from drivers.printer import receipts
from drivers.scanner import SerialScanEngine, VirtualScanEngineLink
printer = open_printer(HardwareConfig().printer)
head = receipts.ReceiptHeader("Store", "S001", "K001", "2026-01-01 10:00")
page = receipts.TechnicianTestPage(head, "sim", 80, "gb18030", ("ok",))
printer.print_receipt(receipts.technician_test_page(page, printer.profile.columns))
assert printer.output
SerialDispenser(VirtualDispenserLink(), 1.0).dispense()
link = VirtualScanEngineLink()
engine = SerialScanEngine(link)
link.present("2900000000018")
assert engine.read_code(2.0).text == "2900000000018"
"""
    assert _loaded(script) == []


def test_a_camera_loads_the_image_libraries_when_it_is_opened():
    image = BARCODES / "qrcode-5" / "01.png"
    script = f"""
from drivers.config import ScannerConfig
from drivers.factory import open_scanner
scanner = open_scanner(ScannerConfig(backend="sim", images=[{str(image)!r}]))
scanner.read_code(5.0)
scanner.close()
"""
    assert {"cv2", "zxingcpp", "numpy"} <= set(_loaded(script))


def test_the_factory_hands_out_the_far_side_of_every_simulated_device():
    devices = open_devices(HardwareConfig(scanner=ScannerConfig(backend="sim-serial")))
    try:
        sim = devices.sim
        assert sim.complete
        assert sim.printer is devices.printer and sim.panel is devices.panel
        sim.dispenser.jam_next = True  # a fault injected through the handle
        with pytest.raises(DispenseError) as raised:
            devices.dispenser.dispense()
        assert raised.value.health.code == "jam"
        devices.dispenser.reset()
        devices.dispenser.dispense()
        assert sim.dispenser.dispensed == 1
        sim.scan_engine.present("2900000000018")
        assert devices.scanner.read_code(2.0).text == "2900000000018"
    finally:
        devices.close()


def test_real_devices_have_no_simulated_far_side(tmp_path):
    config = HardwareConfig(printer=PrinterConfig(backend="file", target=str(tmp_path / "lp0")))
    devices = open_devices(config)
    try:
        assert devices.sim.printer is None and not devices.sim.complete
        assert devices.sim.dispenser is not None  # the rest is still simulated
    finally:
        devices.close()


def test_the_self_test_checks_open_devices_without_opening_any(monkeypatch):
    from drivers import selftest

    def refuse(*_args, **_kwargs):
        raise AssertionError("the self-test opened a device the app already holds")

    for opener in ("open_camera", "open_printer", "open_dispenser", "open_panel", "open_serial"):
        monkeypatch.setattr(selftest, opener, refuse)
    config = HardwareConfig(scanner=ScannerConfig(backend="sim-serial"))
    devices = open_devices(config)
    try:
        devices.sim.dispenser.cards = 3  # low: the check reads the dispenser it was given
        results = {r.device: r for r in selftest.check_hardware(config, devices)}
        assert [r.health.state for r in results.values()] == [
            HealthState.OK,
            HealthState.OK,
            HealthState.DEGRADED,
            HealthState.OK,
        ]
        assert "low=True" in results["dispenser"].detail
        assert results["printer"].detail.startswith("online=True paper=ok")
        devices.dispenser.dispense()  # and the devices are still open afterwards
    finally:
        devices.close()
