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
    ]
    storage = report["checks"][-1]
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
