"""Provisioning: pairing slip, HQ's signed bundle, config and certificates, re-provisioning."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.printer import PrinterProfile, encode_receipt
from drivers.printer.document import Qr
from edge.config import parse_config
from edge.domain.errors import IntegrityError, Refusal
from edge.provisioning.enrolment import (
    apply_enrolment,
    bundle_from_qr,
    bundle_to_qr,
    read_audit,
    verify_enrolment,
)
from edge.provisioning.pairing import pairing_slip, start_pairing
from edge.sync.broker import DevCA
from tests.lifecycle.hq_desk import HqDesk

KIOSK = str(Path(sys.executable).parent / "kiosk")


@pytest.fixture
def desk(tmp_path) -> HqDesk:
    DevCA(tmp_path / "ca")
    return HqDesk.create(tmp_path / "ca")


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "config.toml").write_text('[ui]\nlanguage = "en"\n\n[points]\ncheckin_points = 7\n')
    return d


def test_pairing_slip_carries_serial_code_and_a_request_for_the_device_key(data):
    request = start_pairing(data, serial="10000000abcdef01")
    assert len(request.code) == 10 and request.code.isalnum()
    assert (data / "tls/device.key").stat().st_mode & 0o777 == 0o600
    slip = pairing_slip(request, "2026-03-02 10:00")
    (qr,) = [s for s in slip.steps if isinstance(s, Qr)]
    assert qr.data == request.qr_text and request.serial in qr.data
    raw = encode_receipt(slip, PrinterProfile("gb18030-80", 80, "gb18030", False))
    assert "设备配对".encode("gb18030") in raw and request.code[:5].encode() in raw
    again = start_pairing(data, serial="10000000abcdef01")
    assert again.code != request.code  # one-time: a new slip replaces the old code
    assert again.csr_der != b"" and (data / "tls/device.key").read_bytes()


def test_a_bundle_enrols_the_device_and_keeps_other_settings(data, desk):
    request = start_pairing(data, serial="serial-1")
    bundle = desk.register(request.qr_text, store_id="S007", device_id="K070", broker_port=8883)
    enrolment = verify_enrolment(bundle, desk.enrol_key.public_key())
    applied = apply_enrolment(data, enrolment, actor="tech-wang")
    assert (applied.store_id, applied.device_id, applied.previous_device_id) == (
        "S007",
        "K070",
        None,
    )
    config = parse_config((data / "config.toml").read_text())
    assert (config.device.store_id, config.device.device_id) == ("S007", "K070")
    assert (config.device.card_range_start, config.device.card_range_end) == (100_000, 149_999)
    assert (config.sync.enabled, config.sync.broker_port) == (True, 8883)
    assert config.ui.language == "en" and config.points.checkin_points == 7
    for name in ("tls/ca.crt", "tls/device.crt", "keys/hq-command.pub", "keys/hq-update.pub"):
        assert (data / name).exists(), name
    (record,) = read_audit(data)
    assert (record["action"], record["actor"], record["serial"]) == (
        "provision",
        "tech-wang",
        "serial-1",
    )
    assert record["rules_version"] == "2026.03"
    with pytest.raises(Refusal) as err:  # the code was used up
        apply_enrolment(data, enrolment, reprovision=True)
    assert err.value.code == "not_pairing"


def test_bundles_not_from_hq_or_not_for_this_device_are_refused(data, desk, tmp_path):
    request = start_pairing(data, serial="serial-1")
    forged = desk.register(
        request.qr_text,
        store_id="S007",
        device_id="K070",
        broker_port=8883,
        signer=Ed25519PrivateKey.generate(),
    )
    with pytest.raises(IntegrityError) as forged_err:
        verify_enrolment(forged, desk.enrol_key.public_key())
    assert forged_err.value.code == "bundle_signature"
    # a bundle for another device's pairing (its code and its key)
    other = tmp_path / "other"
    other_request = start_pairing(other, serial="serial-2")
    theirs = desk.register(other_request.qr_text, store_id="S007", device_id="K071", broker_port=1)
    with pytest.raises(Refusal) as err:
        apply_enrolment(data, verify_enrolment(theirs, desk.enrol_key.public_key()))
    assert err.value.code == "certificate_mismatch"
    assert not (data / "tls/device.crt").exists()
    assert read_audit(data) == []


def test_the_qr_form_of_a_bundle_round_trips(data, desk):
    request = start_pairing(data, serial="serial-1")
    bundle = desk.register(request.qr_text, store_id="S1", device_id="K1", broker_port=1883)
    text = bundle_to_qr(bundle)
    assert len(text) < 2900  # fits one QR code (version 40, byte mode)
    assert bundle_from_qr(text) == bundle


def test_reprovisioning_moves_the_device_and_is_audited(data, desk):
    first = start_pairing(data, serial="serial-1")
    apply_enrolment(
        data,
        verify_enrolment(
            desk.register(first.qr_text, store_id="S001", device_id="K001", broker_port=1),
            desk.enrol_key.public_key(),
        ),
    )
    second = start_pairing(data, serial="serial-1")
    moved = verify_enrolment(
        desk.register(
            second.qr_text,
            store_id="S002",
            device_id="K009",
            broker_port=1,
            card_range=(200_000, 249_999),
            replaces="K005",
        ),
        desk.enrol_key.public_key(),
    )
    with pytest.raises(Refusal) as err:
        apply_enrolment(data, moved)
    assert err.value.code == "already_provisioned"
    applied = apply_enrolment(data, moved, reprovision=True, actor="tech-li")
    assert applied.previous_device_id == "K001"
    assert applied.retired_to is not None
    assert (
        tomllib.loads((applied.retired_to / "config.toml").read_text())["device"]["device_id"]
        == "K001"
    )
    records = read_audit(data)
    assert [(r["action"], r["device_id"]) for r in records] == [
        ("provision", "K001"),
        ("reprovision", "K009"),
    ]
    assert records[1]["previous_device_id"] == "K001" and records[1]["replaces_device"] == "K005"
    # the log is chained: editing an earlier record is detected
    log = data / "provisioning/audit.jsonl"
    lines = log.read_text().splitlines()
    edited = json.loads(lines[0])
    edited["actor"] = "someone-else"
    log.write_text(json.dumps(edited) + "\n" + lines[1] + "\n")
    with pytest.raises(IntegrityError):
        read_audit(data)


# -- with a real broker: the issued certificate logs in, the device shows in HQ's fleet ------


def test_provisioned_device_logs_in_and_appears_in_hq_fleet(tmp_path, desk):
    from edge.sync.agent import Agent
    from hq.service import HqService
    from tests.sync.conftest import Runner, open_app, start_broker, wait_until
    from tests.sync.test_end_to_end import hq_config

    broker = start_broker(tmp_path / "broker")
    try:
        desk.ca_dir = broker.directory  # HQ signs with the broker's CA
        data = tmp_path / "K001"
        data.mkdir()
        (data / "keys").mkdir(mode=0o700)
        (data / "keys/hq-enrol.pub").write_bytes(desk.enrol_public_pem())
        (data / "config.toml").write_text("[sync]\ntelemetry_interval_s = 1.0\n")
        slip = subprocess.run(
            [
                KIOSK,
                "--data-dir",
                str(data),
                "--json",
                "provision",
                "pairing-slip",
                "--serial",
                "10000000feedbeef",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        qr = json.loads(slip.stdout)["qr"]
        bundle = tmp_path / "K001.enrol"
        bundle.write_bytes(
            desk.register(qr, store_id="S001", device_id="K001", broker_port=broker.port)
        )
        applied = subprocess.run(
            [KIOSK, "--data-dir", str(data), "provision", "apply", str(bundle)],
            capture_output=True,
            text=True,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "通过 OK    服务器登录 broker login" in applied.stdout
        assert "device in service" in applied.stdout

        config = hq_config(broker, tmp_path)
        hq = HqService(config)
        app = open_app(data)
        runners = [Runner(hq.run), Runner(Agent(app).run)]
        try:

            def in_fleet() -> bool:
                proc = subprocess.run(
                    [KIOSK, "hq", "--db", config.database_url, "fleet", "--json"],
                    capture_output=True,
                    text=True,
                )
                devices = json.loads(proc.stdout)["devices"] if proc.returncode == 0 else []
                return any(
                    d["device_id"] == "K001" and d["store_id"] == "S001" and d["state"] == "online"
                    for d in devices
                )

            wait_until(in_fleet, 30, "K001 online in kiosk hq fleet", every=1.0)
        finally:
            for r in runners:
                r.stop()
            app.close()
    finally:
        broker.stop()
