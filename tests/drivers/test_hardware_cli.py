"""``kiosk scan``, ``kiosk printer test`` and ``kiosk doctor`` end to end, on simulators."""

from __future__ import annotations

import json

import pytest

from tests.drivers.conftest import BARCODES

cli = pytest.importorskip("edge.cli.main")


@pytest.fixture
def kiosk(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIOSK_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_scan_prints_one_json_object_per_image(kiosk):
    qr, blank = BARCODES / "qrcode-2" / "30.png", BARCODES / "falsepositives-2" / "01.png"
    code, out, _ = kiosk("scan", str(qr), str(blank), "--json")
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["path"] == str(qr)
    assert first["codes"] == [{"format": "QR_CODE", "text": "MECARD:N:測試;;"}]
    assert second["codes"] == []
    assert isinstance(first["ms"], float)


def test_printer_test_writes_the_byte_stream(kiosk, tmp_path):
    target = tmp_path / "page.bin"
    code, _, _ = kiosk("printer", "test", "--output", str(target))
    assert code == 0
    data = target.read_bytes()
    assert data.startswith(b"\x1b@\x1c&")
    assert "会员中心".encode("gb18030") in data
    assert b"\x1d(k" in data and b"\x1dkC" in data
    assert data.endswith(b"\x1dVB\x00")


def test_doctor_passes_on_simulators(kiosk):
    code, out, _ = kiosk("doctor", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [c["device"] for c in report["checks"]] == [
        "scanner",
        "printer",
        "dispenser",
        "gpio",
        "database",
        "storage",
        "display",
    ]
    storage = report["checks"][-2]
    assert storage["free_bytes"] > 0 and storage["total_bytes"] >= storage["free_bytes"]
    assert " free of " in storage["detail"]


def test_doctor_fails_on_a_missing_device(kiosk, tmp_path):
    (tmp_path / "config.toml").write_text(
        '[hardware.dispenser]\nbackend = "serial"\nport = "/dev/serial/by-id/usb-none"\n'
    )
    code, out, _ = kiosk("doctor")
    assert code == 1
    assert "FAIL  dispenser" in out
    assert "result: FAILED" in out


def test_doctor_shows_the_screen_as_the_app_will_lay_it_out(kiosk, tmp_path):
    """A landscape monitor turned on its side: the size, rotation and panel in force, the
    smallest touch target from the panel's millimetres; a touch device not found warns."""
    (tmp_path / "config.toml").write_text(
        "[ui]\nfullscreen = false\nwidth = 1920\nheight = 1080\nrotation = 90\n"
        'touch_provider = "hidinput"\ntouch_device = "/dev/input/by-id/usb-no-such-panel"\n'
        "touch_rotation = 90\npanel_width_mm = 400\npanel_height_mm = 711\n"
    )
    code, out, _ = kiosk("doctor", "--json")
    display = next(c for c in json.loads(out)["checks"] if c["device"] == "display")
    assert display["state"] == "degraded" and display["code"] == "touch_missing"
    assert "laid out 1080x1920 portrait, rotation 90" in display["detail"]
    assert "panel 400x711 mm (configured)" in display["detail"]
    assert "touch targets >= 24 px" in display["detail"]  # 9 mm at 2.7 px/mm
    assert "hidinput /dev/input/by-id/usb-no-such-panel rotation 90" in display["detail"]
    assert code == 0  # a warning, not a failure


def test_a_window_size_is_refused_in_one_line(kiosk):
    code, _, err = kiosk("demo", "--size", "1080by1920")
    assert code == 2 and "write it as WIDTHxHEIGHT" in err
    code, _, err = kiosk("run", "--size", "100x100")
    assert code == 2 and "from 480 to 3840 pixels" in err
