"""Contract of a CodeScanner, over the camera pipeline and the serial scan engine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from drivers.errors import DeviceUnavailableError
from drivers.health import HealthState
from drivers.scanner import (
    CameraScanner,
    Code,
    CodeDecoder,
    CodeScanner,
    Debouncer,
    SerialScanEngine,
    SimulatedCamera,
    Symbology,
    VirtualScanEngineLink,
    classify,
)
from tests.drivers.conftest import barcode_image, expected_text
from tests.waiting import wait_for

QR = "qrcode-5/01.png"


@dataclass
class Rig:
    """A scanner plus the means to present a code to it and to break it."""

    scanner: CodeScanner
    present: object
    unplug: object


def _camera_rig() -> Rig:
    camera = SimulatedCamera(fps=60)
    scanner = CameraScanner(lambda: camera, frame_timeout_s=0.5, retry_s=0.1)
    return Rig(
        scanner,
        lambda rel: camera.show(barcode_image(rel)),
        camera.unplug,
    )


def _serial_rig() -> Rig:
    link = VirtualScanEngineLink()
    return Rig(SerialScanEngine(link), lambda rel: link.present(expected_text(rel)), link.unplug)


@pytest.fixture(params=["camera-sim", "serial-sim"])
def rig(request) -> Iterator[Rig]:
    made = _camera_rig() if request.param == "camera-sim" else _serial_rig()
    yield made
    made.scanner.close()


def test_nothing_presented_returns_none_within_the_timeout(rig):
    start = time.monotonic()
    assert rig.scanner.read_code(0.3) is None
    assert time.monotonic() - start < 1.5


def test_a_presented_code_is_read_once(rig):
    rig.present(QR)
    code = rig.scanner.read_code(3.0)
    assert code is not None
    assert code.text.rstrip() == expected_text(QR)
    assert rig.scanner.read_code(0.5) is None  # held before the lens: not reported again
    assert rig.scanner.health().state is HealthState.OK


def test_unplugged_device_fails_health_and_never_blocks(rig):
    rig.unplug()
    start = time.monotonic()
    with contextlib.suppress(DeviceUnavailableError):
        assert rig.scanner.read_code(0.5) is None
    assert time.monotonic() - start < 3.0
    wait_for(lambda: rig.scanner.health().state is HealthState.FAILED, what="health failed")
    assert rig.scanner.health().state is HealthState.FAILED
    assert rig.scanner.health().code == "disconnected"


def test_camera_scanner_recovers_when_the_camera_is_replugged():
    camera = SimulatedCamera(fps=60)
    scanner = CameraScanner(lambda: camera, frame_timeout_s=0.3, retry_s=0.05)
    try:
        camera.unplug()
        wait_for(lambda: scanner.health().state is HealthState.FAILED, what="health failed")
        assert scanner.health().state is HealthState.FAILED
        camera.replug()
        camera.show(barcode_image(QR))
        assert scanner.read_code(3.0) is not None
        assert scanner.health().state is HealthState.OK
    finally:
        scanner.close()


def test_a_frozen_camera_times_out_instead_of_hanging():
    camera = SimulatedCamera(fps=60)
    camera.freeze()
    scanner = CameraScanner(lambda: camera, frame_timeout_s=0.2, retry_s=0.05)
    try:
        assert scanner.read_code(0.6) is None
        assert scanner.health().code == "timeout"
    finally:
        scanner.close()


def test_serial_garbage_degrades_then_a_good_line_heals():
    link = VirtualScanEngineLink()
    engine = SerialScanEngine(link)
    link.send_garbage(b"\xff\xfe\x80\r\n")
    assert engine.read_code(0.2) is None
    assert engine.health().state is HealthState.DEGRADED
    assert engine.health().code == "garbage"
    link.present("4006381333931")
    assert engine.read_code(0.5) == Code(Symbology.EAN_13, "4006381333931")
    assert engine.health().state is HealthState.OK


def test_serial_lines_split_across_reads_and_two_in_one_read():
    link = VirtualScanEngineLink()
    engine = SerialScanEngine(link)
    link.send_garbage(b"MEMB")
    assert engine.read_code(0.1) is None
    link.send_garbage(b"ER-1\r\nSECOND\r\n")
    assert engine.read_code(0.5) == Code(Symbology.CODE_128, "MEMBER-1")
    assert engine.read_code(0.5) == Code(Symbology.CODE_128, "SECOND")


def test_classify_uses_aim_prefix_then_infers():
    assert classify("]Q1会员") == Code(Symbology.QR_CODE, "会员")
    assert classify("]E04006381333931") == Code(Symbology.EAN_13, "4006381333931")
    assert classify("4006381333932").format is Symbology.CODE_128  # bad check digit
    assert classify("会员中心").format is Symbology.QR_CODE


def test_debouncer_reports_a_held_code_once_and_a_new_presentation_again():
    code = Code(Symbology.QR_CODE, "M1")
    debouncer = Debouncer(release_s=1.0)
    assert debouncer.feed([code], 0.0) == [code]
    assert debouncer.feed([code], 0.5) == []
    assert debouncer.feed([], 0.9) == []
    assert debouncer.feed([code], 1.2) == []  # a missed frame is not a new presentation
    assert debouncer.feed([code], 2.5) == [code]  # taken away for over a second, shown again


class SlowDecoder(CodeDecoder):
    """A decoder that takes 50 ms a frame, as a Pi does on a hard frame."""

    def scan(self, image, fallbacks=True):
        time.sleep(0.05)
        return super().scan(image, fallbacks)


def test_stream_drops_stale_frames_when_decoding_is_slower_than_capture():
    camera = SimulatedCamera(fps=100)
    scanner = CameraScanner(lambda: camera, decoder=SlowDecoder())
    try:
        camera.show(barcode_image("qrcode-1/1.png"))
        # 40 frames take 0.4 s to capture at 100 a second and 2 s to decode: a scanner that
        # decoded every frame would never be twice as far in capturing as in decoding
        wait_for(
            lambda: (
                scanner.frames_captured >= 40
                and scanner.frames_decoded * 2 < scanner.frames_captured
            ),
            what="capture to run ahead of decoding",
        )
        assert scanner.frames_decoded * 2 < scanner.frames_captured
        assert scanner.read_code(1.0) is not None
    finally:
        scanner.close()


def test_stream_reports_only_the_presented_code_of_two_in_view():
    zxingcpp = pytest.importorskip("zxingcpp")
    frame = np.full((480, 640, 3), 255, np.uint8)
    for text, scale, top, left in (("M1-PRESENTED", 8, 120, 80), ("M1-POSTER", 3, 20, 500)):
        symbol = np.asarray(
            zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode).to_image(scale=scale)
        )
        h, w = symbol.shape
        frame[top : top + h, left : left + w] = symbol[:, :, None]
    camera = SimulatedCamera(fps=60)
    scanner = CameraScanner(lambda: camera)
    try:
        camera.show(frame)
        assert scanner.read_code(2.0) == Code(Symbology.QR_CODE, "M1-PRESENTED")
        assert scanner.read_code(0.5) is None
    finally:
        scanner.close()
