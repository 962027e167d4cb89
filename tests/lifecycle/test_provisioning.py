"""Provisioning: pairing slip, HQ's enrolment desk, the signed bundle (file, QR code, camera),
config and certificates, re-provisioning, revocation, and the audit on both sides."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import tomllib
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drivers.printer import PrinterProfile, encode_receipt
from drivers.printer.document import Qr
from drivers.scanner import CodeDecoder
from edge.app import AppContext
from edge.cli.main import main
from edge.config import parse_config
from edge.domain.cards import card_number
from edge.domain.errors import ConfigError, IntegrityError, InvalidInput, NotFound, Refusal
from edge.protocol import Event, ReplicaBatch
from edge.protocol.messages import ReplicaEvent
from edge.provisioning.bundle import (
    MAX_QR_TEXT,
    Enrolment,
    bundle_from_qr,
    bundle_to_qr,
    issue_bundle,
    lookup_key_id,
    pairing_qr_text,
    parse_pairing_qr,
    verify_enrolment,
)
from edge.provisioning.enrolment import apply_enrolment, is_provisioned, read_audit
from edge.provisioning.pairing import pairing_slip, start_pairing
from edge.security.keys import load_private_key, load_secret
from edge.security.personal import PhoneVault
from edge.services.members import find_member_id, register_member
from edge.services.replica import apply_replica_batch
from edge.storage.models import Member, OutboxEvent
from hq.enrol import EnrolmentDesk, write_lookup_key
from hq.models import CardRange, EnrolledDevice, EnrolmentAction, UsedPairingCode
from tests.cli_runner import run_kiosk as kiosk_command
from tests.lifecycle.hq_desk import (
    certificate,
    desk_ca,
    look_alike_ca,
    make_desk,
    pem,
    signed_bundle,
    signed_payload,
    with_dates,
)

# The console script pip installed beside this Python, run as its own process where the test
# is about the installed command (the pairing slip); the others run in this process.
KIOSK = str(Path(sys.executable).parent / "kiosk")


def enrol_public(desk: EnrolmentDesk):
    return serialization.load_pem_public_key((desk.settings.ca_dir / "hq-enrol.pub").read_bytes())


def desk_key(desk: EnrolmentDesk) -> Ed25519PrivateKey:
    return load_private_key(desk.settings.enrol_key)


def table_counts(desk: EnrolmentDesk) -> tuple[int, ...]:
    with Session(desk.engine) as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t)) or 0
            for t in (EnrolledDevice, CardRange, UsedPairingCode, EnrolmentAction)
        )


@pytest.fixture
def desk(tmp_path) -> EnrolmentDesk:
    return make_desk(tmp_path, tmp_path / "ca")


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "config.toml").write_text('[ui]\nlanguage = "en"\n\n[points]\ncheckin_points = 7\n')
    return d


def test_pairing_slip_carries_serial_code_and_a_request_and_is_audited(data):
    request = start_pairing(data, serial="10000000abcdef01", actor="tech-wang")
    assert len(request.code) == 10 and request.code.isalnum()
    assert (data / "tls/device.key").stat().st_mode & 0o777 == 0o600
    slip = pairing_slip(request, "2026-03-02 10:00")
    (qr,) = [s for s in slip.steps if isinstance(s, Qr)]
    assert qr.data == request.qr_text and request.serial in qr.data
    raw = encode_receipt(slip, PrinterProfile("gb18030-80", 80, "gb18030", False))
    assert "设备配对".encode("gb18030") in raw and request.code[:5].encode() in raw
    again = start_pairing(data, serial="10000000abcdef01")
    assert again.code != request.code  # one-time: a new slip replaces the old code
    records = read_audit(data)
    assert [(r["action"], r["subject"], r["actor"]) for r in records] == [
        ("provision.pairing", "10000000abcdef01", "tech-wang"),
        ("provision.pairing", "10000000abcdef01", "technician"),
    ]
    assert request.code not in json.dumps(records)  # only the code's hash is kept
    # the provisioning records are in the ledger's audit chain, which `kiosk ledger verify` checks
    verify = kiosk_command("--data-dir", str(data), "--json", "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["audit_records"] == 2


def test_hq_enrols_a_device_from_its_slip_and_the_device_applies_the_bundle(data, desk):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=data.parent / "out")
    assert (issued.device_id, issued.serial) == ("K001", "serial-1")  # the next free id
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    cert = x509.load_pem_x509_certificate(enrolment.device_cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "K001"
    assert format(cert.serial_number, "x") == issued.certificate_serial
    applied = apply_enrolment(data, enrolment, actor="tech-wang")
    assert (applied.store_id, applied.device_id, applied.previous_device_id) == (
        "S007",
        "K001",
        None,
    )
    config = parse_config((data / "config.toml").read_text())
    assert (config.device.store_id, config.device.device_id) == ("S007", "K001")
    assert (config.device.card_range_start, config.device.card_range_end) == (100_000, 149_999)
    assert (config.sync.enabled, config.sync.broker_port) == (True, 8883)
    assert config.ui.language == "en" and config.points.checkin_points == 7
    for name in ("tls/ca.crt", "tls/device.crt", "keys/hq-command.pub", "keys/hq-update.pub"):
        assert (data / name).exists(), name
    pairing, record = read_audit(data)
    assert pairing["action"] == "provision.pairing"
    assert (record["action"], record["actor"], record["serial"]) == (
        "provision.enrol",
        "tech-wang",
        "serial-1",
    )
    assert record["rules_version"] == "2026.03"
    assert record["certificate_serial"] == issued.certificate_serial
    (row,) = desk.devices()
    assert (row.device_id, row.store_id, row.state, row.fleet_state) == (
        "K001",
        "S007",
        "active",
        "never seen",
    )
    with pytest.raises(Refusal) as err:  # the code was used up on the device ...
        apply_enrolment(data, enrolment, reprovision=True)
    assert err.value.code == "not_pairing"
    before = table_counts(desk)
    with pytest.raises(Refusal) as used:  # ... and at HQ
        desk.enrol(request.qr_text, store_id="S007", out_dir=data.parent / "out2")
    assert used.value.code == "pairing_used"
    assert table_counts(desk) == before and not (data.parent / "out2").exists()


def test_card_ranges_never_overlap_and_run_out_with_a_clear_refusal(tmp_path):
    desk = make_desk(tmp_path, tmp_path / "ca", card_range_size=1000, card_range_limit=102_999)
    ranges = []
    for n in range(3):
        slip = start_pairing(tmp_path / f"d{n}", serial=f"serial-{n}")
        issued = desk.enrol(slip.qr_text, store_id="S001", out_dir=tmp_path / "out")
        ranges.append((issued.card_range_start, issued.card_range_end))
    assert ranges == [(100_000, 100_999), (101_000, 101_999), (102_000, 102_999)]
    # the desk restarted on the same database continues after the last block
    again = make_desk(tmp_path, tmp_path / "ca", card_range_size=500)
    slip = start_pairing(tmp_path / "d3", serial="serial-3")
    assert again.enrol(
        slip.qr_text, store_id="S002", out_dir=tmp_path / "out"
    ).card_range_start == (103_000)
    before = table_counts(desk)
    slip = start_pairing(tmp_path / "d4", serial="serial-4")
    with pytest.raises(Refusal) as err:
        desk.enrol(slip.qr_text, store_id="S001", out_dir=tmp_path / "out")
    assert err.value.code == "range_exhausted"
    assert table_counts(desk) == before
    assert not (tmp_path / "out" / "K005.enrol").exists()


def test_bad_slips_are_refused_and_change_nothing(tmp_path, desk):
    good = start_pairing(tmp_path / "dev", serial="serial-1")
    parsed = parse_pairing_qr(good.qr_text)
    tampered = bytearray(parsed.csr_der)
    tampered[-5] ^= 0xFF  # the request's signature no longer matches
    other = start_pairing(tmp_path / "other", serial="serial-2")
    cases = {
        "garbled": ("MCKPAIR1:serial-1", "pairing_qr_invalid"),
        "not ours": ("https://example.com/", "pairing_qr_invalid"),
        "not a request": (pairing_qr_text("serial-1", parsed.code, b"junk"), "csr_invalid"),
        "bad signature": (
            pairing_qr_text("serial-1", parsed.code, bytes(tampered)),
            "csr_signature",
        ),
        "another serial": (
            pairing_qr_text("serial-9", parsed.code, parse_pairing_qr(other.qr_text).csr_der),
            "csr_invalid",
        ),
    }
    out = tmp_path / "out"
    for name, (text, code) in cases.items():
        with pytest.raises(InvalidInput) as err:
            desk.enrol(text, store_id="S001", out_dir=out)
        assert err.value.code == code, name
    with pytest.raises(InvalidInput) as bad_store:
        desk.enrol(good.qr_text, store_id="S 1/#", out_dir=out)
    assert bad_store.value.code == "bad_name"
    for action in (
        lambda: desk.revoke("K404", "lost"),
        lambda: desk.move("K404", good.qr_text, store_id="S002", out_dir=out),
        lambda: desk.replace("K404", good.qr_text, out_dir=out),
    ):
        with pytest.raises(NotFound) as unknown:
            action()
        assert unknown.value.code == "unknown_device"
    assert table_counts(desk) == (0, 0, 0, 0)
    assert not out.exists() or not any(out.iterdir())
    assert desk.revoked_serials() == []
    # a taken device id
    desk.enrol(good.qr_text, store_id="S001", device_id="K070", out_dir=out)
    with pytest.raises(Refusal) as taken:
        desk.enrol(other.qr_text, store_id="S001", device_id="K070", out_dir=out)
    assert taken.value.code == "device_id_taken"


def test_bundles_not_from_hq_or_not_for_this_device_are_refused(data, desk, tmp_path):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=tmp_path / "out")
    genuine = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    forged = issue_bundle(genuine, Ed25519PrivateKey.generate())
    with pytest.raises(IntegrityError) as forged_err:
        verify_enrolment(forged, enrol_public(desk))
    assert forged_err.value.code == "bundle_signature"
    # a bundle for another device's pairing (its code and its key)
    other_request = start_pairing(tmp_path / "other", serial="serial-2")
    theirs = desk.enrol(other_request.qr_text, store_id="S007", out_dir=tmp_path / "out")
    with pytest.raises(Refusal) as err:
        apply_enrolment(data, verify_enrolment(theirs.bundle_path.read_bytes(), enrol_public(desk)))
    assert err.value.code == "certificate_mismatch"
    assert not (data / "tls/device.crt").exists()
    assert [r["action"] for r in read_audit(data)] == ["provision.pairing"]


def test_the_bundle_fits_one_qr_code_and_its_png_reads_back(data, desk, tmp_path):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S1", out_dir=tmp_path / "out")
    bundle = issued.bundle_path.read_bytes()
    text = bundle_to_qr(bundle)
    assert issued.qr_chars == len(text) <= MAX_QR_TEXT  # one QR code (version 40, byte mode)
    assert bundle_from_qr(text) == bundle
    import cv2

    image = cv2.imread(str(issued.qr_path), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    (code,) = CodeDecoder().decode(image)  # type: ignore[arg-type]
    assert code.text == text
    with pytest.raises(InvalidInput):
        bundle_from_qr(text[:-40] + "!!")


def test_moving_a_device_is_audited_on_both_sides_and_revokes_its_old_certificate(data, desk):
    out = data.parent / "out"
    first = start_pairing(data, serial="serial-1")
    issued = desk.enrol(first.qr_text, store_id="S001", device_id="K001", out_dir=out)
    apply_enrolment(data, verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk)))
    second = start_pairing(data, serial="serial-1")
    moved = desk.move("K001", second.qr_text, store_id="S002", out_dir=out, actor="hq-zhao")
    assert (moved.device_id, moved.store_id) == ("K001", "S002")
    assert (moved.card_range_start, moved.card_range_end) == (
        issued.card_range_start,
        issued.card_range_end,
    )  # the same identity keeps its card serials
    assert moved.revoked == (issued.certificate_serial,)
    bundle = verify_enrolment(moved.bundle_path.read_bytes(), enrol_public(desk))
    with pytest.raises(Refusal) as err:
        apply_enrolment(data, bundle)
    assert err.value.code == "already_provisioned"
    applied = apply_enrolment(data, bundle, reprovision=True, actor="tech-li")
    assert (applied.previous_device_id, applied.action) == ("K001", "provision.move")
    assert applied.retired_to is not None
    retired = tomllib.loads((applied.retired_to / "config.toml").read_text())
    assert retired["device"]["store_id"] == "S001"
    records = [r for r in read_audit(data) if r["action"] != "provision.pairing"]
    assert [(r["action"], r["store_id"], r["actor"]) for r in records] == [
        ("provision.enrol", "S001", "technician"),
        ("provision.move", "S002", "tech-li"),
    ]
    assert records[1]["previous_store_id"] == "S001"
    hq_side = desk.actions("K001")
    assert [(a.action, a.store_id) for a in hq_side] == [("enrol", "S001"), ("move", "S002")]
    assert hq_side[1].actor == "hq-zhao" and hq_side[1].detail["previous_store_id"] == "S001"
    crl = x509.load_pem_x509_crl(desk.settings.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(issued.certificate_serial, 16))
    assert crl.get_revoked_certificate_by_serial_number(int(moved.certificate_serial, 16)) is None
    # the device's chain is tamper-evident: editing an earlier record is detected
    with sqlite3.connect(data / "kiosk.db") as db:
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE action = 'provision.enrol'")
    with pytest.raises(IntegrityError):
        read_audit(data)


def test_replacing_a_broken_device_revokes_its_identity(tmp_path, desk):
    out = tmp_path / "out"
    broken = desk.enrol(
        start_pairing(tmp_path / "old", serial="old").qr_text, store_id="S001", out_dir=out
    )
    new_data = tmp_path / "new"
    spare = start_pairing(new_data, serial="spare")
    issued = desk.replace(broken.device_id, spare.qr_text, out_dir=out, reason="screen broken")
    assert (issued.device_id, issued.store_id, issued.serial) == ("K001", "S001", "spare")
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    assert enrolment.replaces_device == "K001"
    applied = apply_enrolment(new_data, enrolment)
    assert applied.action == "provision.replace"
    crl = x509.load_pem_x509_crl(desk.settings.crl_path.read_bytes())
    assert {format(r.serial_number, "x") for r in crl} == {broken.certificate_serial}
    ca = x509.load_pem_x509_certificate((desk.settings.ca_dir / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    # revoking the replacement too (stolen): it joins the list
    desk.revoke("K001", "stolen from the store")
    crl = x509.load_pem_x509_crl(desk.settings.crl_path.read_bytes())
    assert {format(r.serial_number, "x") for r in crl} == {
        broken.certificate_serial,
        issued.certificate_serial,
    }
    with pytest.raises(Refusal):
        desk.revoke("K001", "again")
    assert [a.action for a in desk.actions()] == ["enrol", "replace", "revoke"]


def run_kiosk(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``kiosk ARGS`` in this process, as the console runs it: exit code, stdout, stderr."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def hq_desk_args(desk: EnrolmentDesk) -> list[str | Path]:
    """``kiosk hq --db ...`` on the desk's database."""
    return ["hq", "--db", str(desk.engine.url)]


def test_camera_enrolment_reads_the_bundle_qr_from_the_simulated_camera(
    data, desk, tmp_path, capsys
):
    request = start_pairing(data, serial="serial-cam")
    code, out, err = run_kiosk(
        capsys,
        *hq_desk_args(desk),
        "enrol",
        request.qr_text,
        "--store",
        "S003",
        "--device",
        "K030",
        "--out",
        tmp_path / "out",
        "--rules-version",
        "2026.04",
        "--ca-dir",
        desk.settings.ca_dir,
        "--json",
    )
    assert code == 0, err
    issued = json.loads(out)
    assert issued["device_id"] == "K030"
    cmd = [
        "--data-dir",
        str(data),
        "provision",
        "enrol",
        "--camera",
        "--sim",
        "--timeout",
        "20",
        "--hq-key",
        str(desk.settings.ca_dir / "hq-enrol.pub"),
        "--skip-checks",
    ]
    # a camera showing nothing: a clear error after the timeout, nothing changed
    blank = kiosk_command(*cmd, "--timeout", "2")
    assert blank.returncode == 1 and "no enrolment QR code" in blank.stderr, blank.stderr
    assert not (data / "tls/device.crt").exists()
    shown = kiosk_command(*cmd, "--sim-image", issued["qr_path"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "enrolled: store S003, device K030" in shown.stdout
    assert f"lookup key {issued['lookup_key_id']}" in shown.stdout, shown.stdout
    config_text = parse_config((data / "config.toml").read_text())
    assert config_text.device.device_id == "K030"
    assert read_audit(data)[-1]["rules_version"] == "2026.04"
    code, out, err = run_kiosk(capsys, *hq_desk_args(desk), "devices", "--json")
    assert code == 0, err
    assert [d["device_id"] for d in json.loads(out)["devices"]] == ["K030"]


def test_hq_cli_refuses_a_garbled_slip_with_a_clear_error(desk, tmp_path, capsys):
    code, out, err = run_kiosk(
        capsys,
        *hq_desk_args(desk),
        "enrol",
        "MCKPAIR1:garbage",
        "--store",
        "S001",
        "--out",
        tmp_path / "out",
        "--ca-dir",
        desk.settings.ca_dir,
    )
    assert code == 1
    assert err.startswith("error: not a member-kiosk pairing code"), err
    assert len(err.strip().splitlines()) == 1
    assert table_counts(desk) == (0, 0, 0, 0)
    # reading the record needs no CA
    code, out, err = run_kiosk(capsys, *hq_desk_args(desk), "enrolments")
    assert (code, out.strip()) == (0, "no enrolments"), err
    code, out, err = run_kiosk(capsys, *hq_desk_args(desk), "revoke", "K001", "--reason", "lost")
    assert code == 2 and "--ca-dir" in err


def test_hq_desk_commands_offer_only_the_options_they_use(capsys):
    issuing = ("--enrol-key", "--lookup-key", "--command-key", "--update-key", "--range-size")
    for command in ("devices", "enrolments", "crl", "revoke"):
        code, out, _ = run_kiosk(capsys, "hq", command, "--help")
        assert code == 0 and "--ca-dir" in out, command
        assert not [o for o in (*issuing, "--device-broker-host", "--rules-version") if o in out]
    assert "--actor" not in run_kiosk(capsys, "hq", "devices", "--help")[1]
    assert "--actor" in run_kiosk(capsys, "hq", "revoke", "--help")[1]
    for command in ("enrol", "move", "replace"):
        code, out, _ = run_kiosk(capsys, "hq", command, "--help")
        assert code == 0 and all(o in out for o in (*issuing, "--ca-dir", "--actor")), command


def test_a_missing_ca_certificate_is_one_clear_error_and_changes_nothing(desk, tmp_path, capsys):
    slip = start_pairing(tmp_path / "dev", serial="serial-1")
    (desk.settings.ca_dir / "ca.crt").unlink()
    code, _, err = run_kiosk(
        capsys,
        *hq_desk_args(desk),
        "enrol",
        slip.qr_text,
        "--store",
        "S001",
        "--out",
        tmp_path / "out",
        "--ca-dir",
        desk.settings.ca_dir,
    )
    assert code == 1, err
    assert err.startswith(f"error: the broker CA in {desk.settings.ca_dir}"), err
    assert "ca.crt" in err and "internal error" not in err and len(err.splitlines()) == 1
    assert table_counts(desk) == (0, 0, 0, 0) and not (tmp_path / "out").exists()


# -- with a real broker: the issued certificate logs in, the device shows in HQ's fleet, a
# revoked certificate is refused by a broker reading HQ's CRL ---------------------------------


def test_enrolled_device_logs_in_appears_in_hq_fleet_and_is_refused_once_revoked(tmp_path):
    from edge.provisioning.checks import check_broker_login
    from edge.sync.agent import Agent
    from hq.service import HqService
    from tests.sync.conftest import Runner, make_data_dir, open_app, start_broker, wait_until
    from tests.sync.test_end_to_end import hq_config

    broker = start_broker(tmp_path / "broker")
    try:
        desk = make_desk(tmp_path, broker.directory, broker_port=broker.port)
        data = tmp_path / "K001"
        data.mkdir()
        (data / "keys").mkdir(mode=0o700)
        (data / "keys/hq-enrol.pub").write_bytes((broker.directory / "hq-enrol.pub").read_bytes())
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
                "--no-print",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        qr = json.loads(slip.stdout)["qr"]
        issued = desk.enrol(qr, store_id="S001", device_id="K001", out_dir=tmp_path / "out")
        applied = kiosk_command(
            "--data-dir", str(data), "provision", "enrol", str(issued.bundle_path)
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
                return any(
                    d.device_id == "K001" and d.store_id == "S001" and d.fleet_state == "online"
                    for d in desk.devices()
                )

            wait_until(in_fleet, 30, "K001 online in HQ's enrolled devices", every=0.5)
        finally:
            for r in runners:
                r.stop()
            app.close()

        # revoked at HQ: the shipped broker configuration reads HQ's CRL from the broker's
        # directory; restarted with it, the broker refuses the device's certificate
        assert f"crlfile {broker.directory / 'crl.pem'}" in broker.conf.read_text()
        desk.revoke("K001", "stolen")
        assert desk.settings.crl_path.resolve() == (broker.directory / "crl.pem").resolve()
        broker.stop()
        broker.start()
        checked = kiosk_command("--data-dir", str(data), "provision", "check")
        assert checked.returncode == 1, checked.stdout
        assert "失败 FAIL  服务器登录 broker login" in checked.stdout, checked.stdout
        # ... while a certificate not on the list still logs in on that broker
        other = make_data_dir(tmp_path / "others", broker, "K002", "S002", 200_000)
        other_config = parse_config((other / "config.toml").read_text())
        assert check_broker_login(other_config, other).ok
    finally:
        broker.stop()


def test_the_console_offers_the_enrolment_desk_under_kiosk_hq(desk):
    listed = kiosk_command("hq", "--db", str(desk.engine.url), "enrolments")
    assert (listed.returncode, listed.stdout.strip()) == (0, "no enrolments"), listed.stderr


# -- the chain's phone-lookup key: sealed in the bundle, installed, members re-hashed ----------


def _enrolled(desk: EnrolmentDesk, data: Path, serial: str, store: str, device: str) -> Path:
    """A device paired, registered at ``desk`` and enrolled from its bundle."""
    data.mkdir(parents=True, exist_ok=True)
    slip = start_pairing(data, serial=serial)
    issued = desk.enrol(slip.qr_text, store_id=store, device_id=device, out_dir=data / "out")
    apply_enrolment(data, verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk)))
    return data


def _outbox(app: AppContext, kind: str) -> list[Event]:
    with app.db.read() as session:
        rows = session.execute(
            select(OutboxEvent.seq, OutboxEvent.payload)
            .where(OutboxEvent.kind == kind)
            .order_by(OutboxEvent.seq)
        ).all()
    return [Event(**json.loads(payload), seq=seq) for seq, payload in rows]


def _replicate(app: AppContext, events: list[Event]) -> None:
    """HQ's replica batch carrying ``events`` (another device's) to ``app``."""
    batch = ReplicaBatch(
        after_seq=0,
        to_seq=len(events),
        events=[ReplicaEvent(hq_seq=n, event=e) for n, e in enumerate(events, 1)],
        at=datetime.now(UTC),
    )
    assert apply_replica_batch(app, batch).applied == len(events)


def test_devices_of_one_desk_share_the_lookup_key_and_find_each_others_members(tmp_path, desk):
    a = _enrolled(desk, tmp_path / "A", "serial-a", "S001", "K001")
    b = _enrolled(desk, tmp_path / "B", "serial-b", "S002", "K002")
    chain_key = (desk.settings.ca_dir / "hq-lookup.key").read_bytes()
    assert len(chain_key) == 32
    assert desk.settings.lookup_key_path.stat().st_mode & 0o777 == 0o600
    for data in (a, b):
        installed = data / "keys" / "lookup.key"
        assert installed.read_bytes() == chain_key
        assert installed.stat().st_mode & 0o777 == 0o600
        record = read_audit(data)[-1]
        assert record["lookup_key_id"] == lookup_key_id(chain_key)
        assert (record["lookup_key_source"], record["members_rehashed"]) == ("bundle", 0)
        assert chain_key.hex() not in json.dumps(read_audit(data))
    assert [a.detail["lookup_key_id"] for a in desk.actions()] == [lookup_key_id(chain_key)] * 2
    # the key travels sealed: the bundle file holds no copy of it
    bundle = (a / "out" / "K001.enrol").read_bytes()
    payload = base64.b64decode(json.loads(bundle)["payload"])
    assert chain_key not in payload and chain_key.hex().encode() not in payload
    assert chain_key not in bundle_from_qr(bundle_to_qr(bundle))

    app_a, app_b = AppContext.open(a), AppContext.open(b)
    alone = tmp_path / "never-enrolled"  # a device with its own dev lookup key
    alone.mkdir()
    (alone / "config.toml").write_text('[device]\nstore_id = "S009"\ndevice_id = "K009"\n')
    loner = AppContext.open(alone)
    try:
        member_id = register_member(app_a, "138 0013 8000", consent=True).member_id
        assert find_member_id(app_b, phone="13800138000") is None
        registered = _outbox(app_a, "member.registered")
        _replicate(app_b, registered)
        _replicate(loner, registered)
        assert find_member_id(app_b, phone="+86 138-0013-8000") == member_id
        assert find_member_id(loner, phone="13800138000") is None  # without the chain's key
    finally:
        for app in (app_a, app_b, loner):
            app.close()


def test_enrolment_rehashes_members_registered_under_the_dev_key(tmp_path, desk):
    data = tmp_path / "dev"
    app = AppContext.open(data)
    try:
        first = register_member(app, "13800138000", consent=True).member_id
        second = register_member(app, "13900139000", consent=True, name="王芳").member_id
        dev_key = (data / "keys" / "lookup.key").read_bytes()
        old_hash = app.vault.lookup_hash("13800138000")
    finally:
        app.close()
    # a member of another store, known here only by the hash its store sent
    other = Event(
        event_id="01J0000000000000000000000A",
        kind="member.registered",
        store_id="S009",
        device_id="K009",
        at=datetime.now(UTC),
        data={
            "member_id": "01J0000000000000000000000B",
            "phone_hash": "ab" * 32,
            "phone_masked": "137****7000",
            "card_no": card_number(900_001),
            "card_type": "virtual",
            "tier": "regular",
            "consent_version": "2024-01",
        },
        seq=1,
    )
    app = AppContext.open(data)
    try:
        _replicate(app, [other])
    finally:
        app.close()

    applied = _enrolled(desk, data, "serial-dev", "S001", "K001")
    chain_key = desk.settings.lookup_key_path.read_bytes()
    assert chain_key != dev_key
    assert (data / "keys" / "lookup.key").read_bytes() == chain_key
    record = read_audit(applied)[-1]
    assert record["members_rehashed"] == 2
    assert record["replica_phone_hashes_kept"] == 1
    assert record["previous_lookup_key_id"] == lookup_key_id(dev_key)
    assert dev_key.hex() not in json.dumps(record) and chain_key.hex() not in json.dumps(record)
    app = AppContext.open(data)
    try:
        assert find_member_id(app, phone="13800138000") == first
        assert find_member_id(app, phone="139 0013 9000") == second
        with app.db.read() as session:
            assert session.scalar(select(Member.phone_hash).where(Member.id == first)) != old_hash
            kept = session.get(Member, "01J0000000000000000000000B")
            assert kept is not None and kept.phone_hash == "ab" * 32
        updates = {
            e.data["member_id"]: e.data["phone_hash"] for e in _outbox(app, "member.updated")
        }
        assert updates == {
            first: app.vault.lookup_hash("13800138000"),
            second: app.vault.lookup_hash("13900139000"),
        }
    finally:
        app.close()
    verify = kiosk_command("--data-dir", str(data), "--json", "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_lookup_key_sealed_for_another_device_is_refused_and_changes_nothing(tmp_path, desk):
    data = tmp_path / "dev"
    app = AppContext.open(data)
    try:
        member = register_member(app, "13800138000", consent=True).member_id
    finally:
        app.close()
    dev_key = (data / "keys" / "lookup.key").read_bytes()
    mine = desk.enrol(
        start_pairing(data, serial="serial-1").qr_text, store_id="S001", out_dir=tmp_path / "out"
    )
    theirs = desk.enrol(
        start_pairing(tmp_path / "other", serial="serial-2").qr_text,
        store_id="S001",
        out_dir=tmp_path / "out",
    )
    genuine = verify_enrolment(mine.bundle_path.read_bytes(), enrol_public(desk))
    other = verify_enrolment(theirs.bundle_path.read_bytes(), enrol_public(desk))
    sealed = base64.b64decode(genuine.lookup_key_sealed)
    flipped = base64.b64encode(sealed[:-1] + bytes([sealed[-1] ^ 1])).decode()
    for bad in (other.lookup_key_sealed, flipped, "garbled!", ""):
        signed = issue_bundle(replace(genuine, lookup_key_sealed=bad), desk_key(desk))
        if not bad:  # a bundle without the key is not a format 2 bundle
            with pytest.raises(IntegrityError) as missing:
                verify_enrolment(signed, enrol_public(desk))
            assert missing.value.code == "bundle_invalid"
            continue
        with pytest.raises(IntegrityError) as err:
            apply_enrolment(data, verify_enrolment(signed, enrol_public(desk)))
        assert err.value.code == "lookup_key_invalid", bad
        assert (data / "keys" / "lookup.key").read_bytes() == dev_key
        assert not (data / "tls/device.crt").exists()
        assert [r["action"] for r in read_audit(data)] == ["provision.pairing"]
    app = AppContext.open(data)
    try:
        assert find_member_id(app, phone="13800138000") == member
    finally:
        app.close()
    apply_enrolment(data, genuine)  # the genuine bundle still applies
    assert (data / "keys" / "lookup.key").read_bytes() == desk.settings.lookup_key_path.read_bytes()


def test_a_lookup_key_given_as_a_systemd_credential_wins(tmp_path, desk, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    own = bytes(range(32))
    (credentials / "lookup.key").write_text(own.hex())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    data = tmp_path / "dev"
    slip = start_pairing(data, serial="serial-1")
    issued = desk.enrol(slip.qr_text, store_id="S001", out_dir=tmp_path / "out")
    applied = apply_enrolment(
        data, verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    )
    assert applied.lookup_key_source == "credential"
    assert not (data / "keys" / "lookup.key").exists()
    record = read_audit(data)[-1]
    assert record["lookup_key_in_use"] == lookup_key_id(own) != record["lookup_key_id"]
    app = AppContext.open(data)
    try:
        assert app.keys.lookup_key == own
    finally:
        app.close()


def test_hq_keeps_one_lookup_key_and_refuses_to_issue_under_another(tmp_path, desk, capsys):
    out = tmp_path / "out"
    desk.enrol(start_pairing(tmp_path / "d1", serial="s1").qr_text, store_id="S1", out_dir=out)
    path = desk.settings.lookup_key_path
    chain_key = path.read_bytes()
    before = table_counts(desk)
    path.write_bytes(bytes(32))
    slip = start_pairing(tmp_path / "d2", serial="s2")
    with pytest.raises(ConfigError) as changed:
        desk.enrol(slip.qr_text, store_id="S1", out_dir=out)
    assert changed.value.code == "lookup_key_changed"
    path.unlink()
    with pytest.raises(ConfigError) as missing:
        desk.enrol(slip.qr_text, store_id="S1", out_dir=out)
    assert missing.value.code == "lookup_key_missing" and not path.exists()
    assert table_counts(desk) == before
    path.write_bytes(chain_key)
    path.chmod(0o644)
    with pytest.raises(ConfigError) as loose:
        desk.enrol(slip.qr_text, store_id="S1", out_dir=out)
    assert loose.value.code == "key_permissions"
    path.chmod(0o600)
    assert desk.enrol(slip.qr_text, store_id="S1", out_dir=out).lookup_key_id == lookup_key_id(
        chain_key
    )
    # the console makes the key once and never overwrites it
    fresh = tmp_path / "fresh-ca"
    code, out, err = run_kiosk(capsys, "hq", "lookup-key", "--out", fresh)
    assert code == 0, err
    key_file = fresh / "hq-lookup.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    first = key_file.read_bytes()
    code, out, err = run_kiosk(capsys, "hq", "lookup-key", "--out", fresh)
    assert code == 1 and err.startswith("error: ") and "already exists" in err
    assert key_file.read_bytes() == first


# -- is this device provisioned? One query at every kiosk start; devices of the old log count --


def test_is_provisioned_is_one_read_only_query_and_no_chain_walk(tmp_path, desk):
    blank = tmp_path / "blank"
    (blank / "tls").mkdir(parents=True)
    (blank / "tls/device.crt").write_text("not enrolled through the desk")
    assert not is_provisioned(blank)
    assert not (blank / "kiosk.db").exists()  # asking creates no database
    sqlite3.connect(blank / "kiosk.db").close()  # a database without an audit log yet
    assert not is_provisioned(blank)

    data = _enrolled(desk, tmp_path / "dev", "serial-1", "S001", "K001")
    assert is_provisioned(data)
    moved = tmp_path / "elsewhere.db"  # a database the configuration puts elsewhere
    (data / "kiosk.db").rename(moved)
    assert not is_provisioned(data)
    assert is_provisioned(data, moved)
    moved.rename(data / "kiosk.db")
    (data / "tls/device.crt").rename(data / "tls/device.crt.bak")
    assert not is_provisioned(data)  # no certificate: not in service, whatever the log says
    (data / "tls/device.crt.bak").rename(data / "tls/device.crt")
    # an altered record does not stop the kiosk from starting; `provision audit` reports it
    with sqlite3.connect(data / "kiosk.db") as db:
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE action = 'provision.pairing'")
    assert is_provisioned(data)
    with pytest.raises(IntegrityError) as broken:
        read_audit(data)
    assert broken.value.code == "audit_broken"
    audit = kiosk_command("--data-dir", str(data), "provision", "audit")
    assert audit.returncode == 1 and "was altered" in audit.stderr, audit.stderr


def test_a_device_enrolled_under_the_old_provisioning_log_counts_as_provisioned(tmp_path, desk):
    data = tmp_path / "old"
    slip = start_pairing(data, serial="serial-old")
    (data / "tls/device.crt").write_text("the certificate of its first enrolment")
    (data / "provisioning/audit.jsonl").write_text('{"action": "enrol", "device_id": "K009"}\n')
    (data / "config.toml").write_text('[device]\nstore_id = "S009"\ndevice_id = "K009"\n')
    assert is_provisioned(data)
    issued = desk.enrol(slip.qr_text, store_id="S001", device_id="K010", out_dir=tmp_path / "o")
    bundle = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    with pytest.raises(Refusal) as err:
        apply_enrolment(data, bundle)
    assert err.value.code == "already_provisioned"
    assert "K009" in err.value.message
    assert [r["action"] for r in read_audit(data)] == ["provision.pairing"]
    applied = apply_enrolment(data, bundle, reprovision=True)
    assert (applied.previous_device_id, applied.action) == ("K009", "provision.move")
    (data / "provisioning/audit.jsonl").write_text("")  # an empty old log enrolled nothing
    assert is_provisioned(data)  # ... but the audit log now records the move


def test_enrolment_clears_only_the_replica_hashes_that_clash_with_a_local_member(tmp_path, desk):
    chain_key = load_secret(write_lookup_key(desk.settings.lookup_key_path))
    data = tmp_path / "dev"
    app = AppContext.open(data)
    try:
        local = register_member(app, "13800138000", consent=True).member_id
        clash = PhoneVault(app.keys.data_key, chain_key).lookup_hash("13800138000")
        replicas = [
            Event(
                event_id=f"01J000000000000000000000{n}A",
                kind="member.registered",
                store_id="S009",
                device_id="K009",
                at=datetime.now(UTC),
                data={
                    "member_id": f"01J000000000000000000000{n}B",
                    "phone_hash": phone_hash,
                    "phone_masked": "138****8000",
                    "card_no": card_number(900_001 + n),
                    "card_type": "virtual",
                    "tier": "regular",
                    "consent_version": "2024-01",
                },
                seq=n + 1,
            )
            for n, phone_hash in enumerate((clash, "cd" * 32, "ef" * 32))
        ]
        _replicate(app, replicas)
    finally:
        app.close()
    _enrolled(desk, data, "serial-dev", "S001", "K001")
    record = read_audit(data)[-1]
    assert (record["members_rehashed"], record["replica_phone_hashes_kept"]) == (1, 2)
    assert record["replica_phone_hashes_cleared"] == 1
    app = AppContext.open(data)
    try:
        assert find_member_id(app, phone="13800138000") == local  # the local member keeps it
        with app.db.read() as session:
            rows = session.execute(
                select(Member.id, Member.phone_hash).where(Member.phone_cipher.is_(None))
            )
            hashes = {member_id: phone_hash for member_id, phone_hash in rows}
        assert hashes == {
            "01J0000000000000000000000B": None,
            "01J0000000000000000000001B": "cd" * 32,
            "01J0000000000000000000002B": "ef" * 32,
        }
    finally:
        app.close()


# -- what is undone when an enrolment or an issue fails half-way ------------------------------


def test_a_bundle_whose_qr_image_cannot_be_written_leaves_no_file_and_no_row(
    tmp_path, desk, monkeypatch
):
    import hq.enrol

    def no_space(text: str, path: Path) -> None:
        assert (path.parent / "K001.enrol").exists()  # the bundle file is already written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hq.enrol, "write_qr_png", no_space)
    out = tmp_path / "out"
    slip = start_pairing(tmp_path / "dev", serial="serial-1")
    with pytest.raises(OSError, match="No space left"):
        desk.enrol(slip.qr_text, store_id="S001", device_id="K001", out_dir=out)
    assert table_counts(desk) == (0, 0, 0, 0)
    assert not (out / "K001.enrol").exists()  # it was written before the QR image failed
    assert not (out / "K001.enrol.png").exists()
    monkeypatch.undo()
    issued = desk.enrol(slip.qr_text, store_id="S001", device_id="K001", out_dir=out)
    assert issued.bundle_path.exists() and issued.qr_path.exists()  # the code was not used up


def test_an_enrolment_that_does_not_commit_puts_the_lookup_key_back(tmp_path, desk, monkeypatch):
    from contextlib import contextmanager

    from edge.provisioning import history

    recording = history.record_provisioning

    @contextmanager
    def commit_fails(data_dir: Path, config_path: Path | None = None):
        with recording(data_dir, config_path) as tx:
            yield tx
            assert (data_dir / "keys/lookup.key").exists()  # installed inside the transaction
            raise OSError(5, "Input/output error")

    with_members = tmp_path / "dev"
    app = AppContext.open(with_members)
    try:
        member = register_member(app, "13800138000", consent=True).member_id
    finally:
        app.close()
    dev_key = (with_members / "keys/lookup.key").read_bytes()
    fresh = tmp_path / "fresh"  # never made a lookup key
    bundles = {}
    for n, data in enumerate((with_members, fresh)):
        slip = start_pairing(data, serial=f"serial-{n}")
        issued = desk.enrol(slip.qr_text, store_id="S001", out_dir=tmp_path / "out")
        bundles[data] = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    assert not (fresh / "keys/lookup.key").exists()

    monkeypatch.setattr(history, "record_provisioning", commit_fails)
    for data, bundle in bundles.items():
        with pytest.raises(OSError, match="Input/output"):
            apply_enrolment(data, bundle)
    monkeypatch.undo()
    assert (with_members / "keys/lookup.key").read_bytes() == dev_key
    assert (with_members / "keys/lookup.key").stat().st_mode & 0o777 == 0o600
    assert not (fresh / "keys/lookup.key").exists()
    assert not list((with_members / "keys").glob(".lookup.key.*"))  # no temp file left
    app = AppContext.open(with_members)
    try:
        assert find_member_id(app, phone="13800138000") == member  # under the key it has
        assert _outbox(app, "member.updated") == []
    finally:
        app.close()
    for data in bundles:
        assert [r["action"] for r in read_audit(data)] == ["provision.pairing"]
        assert not is_provisioned(data)


# -- a hostile technician's bundles: each refused in one line, the device exactly as before ----

DAY = timedelta(days=1)
NEW_BUNDLE = "ask HQ for a new bundle"


def _paired(tmp_path: Path, desk: EnrolmentDesk, name: str = "dev") -> tuple[Path, Enrolment]:
    """A device that printed its slip (and holds HQ's enrolment key, as the image installs it),
    and the genuine enrolment HQ's desk made from that slip."""
    data = tmp_path / name
    slip = start_pairing(data, serial=f"serial-{name}")
    (data / "keys").mkdir(exist_ok=True)
    (data / "keys/hq-enrol.pub").write_bytes((desk.settings.ca_dir / "hq-enrol.pub").read_bytes())
    issued = desk.enrol(slip.qr_text, store_id="S001", out_dir=tmp_path / f"{name}-out")
    return data, verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))


def _device_public(data: Path) -> ec.EllipticCurvePublicKey:
    key = load_pem_private_key((data / "tls/device.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.public_key()


def _snapshot(data: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and directory under ``data``: its mode and (for a file) its bytes."""
    return {
        str(p.relative_to(data)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(data.rglob("*"))
    }


def _enrol(
    capsys: pytest.CaptureFixture[str], data: Path, bundle: bytes, *extra: str
) -> tuple[int, str, str]:
    """``kiosk provision enrol BUNDLE`` as a technician types it."""
    path = data.parent / "bundle.enrol"
    path.write_bytes(bundle)
    return run_kiosk(capsys, "--data-dir", data, "provision", "enrol", path, *extra)


def _refused(capsys: pytest.CaptureFixture[str], data: Path, bundle: bytes, *extra: str) -> str:
    """The error line of a refused ``kiosk provision enrol``: exit 1, one line that is no
    internal error, and not a byte of the data directory changed."""
    before = _snapshot(data)
    code, out, err = _enrol(capsys, data, bundle, *extra)
    assert (code, out) == (1, ""), out + err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "internal error" not in err, err
    assert _snapshot(data) == before, err
    return err.strip()


def _still_enrols(capsys: pytest.CaptureFixture[str], data: Path, desk, genuine) -> None:
    """The genuine bundle enrols after the refusals: they used nothing up."""
    code, out, err = _enrol(capsys, data, signed_bundle(desk, genuine), "--skip-checks")
    assert code == 0 and "enrolled: store S001" in out, out + err


def test_a_device_certificate_expired_or_not_yet_valid_is_refused_and_writes_nothing(
    tmp_path, desk, capsys
):
    data, genuine = _paired(tmp_path, desk)
    key, ca, now = _device_public(data), desk_ca(desk), datetime.now(UTC)
    expired = certificate("K001", key, ca, not_before=now - 365 * DAY, not_after=now - DAY)
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(expired)))
    assert "the device certificate expired on" in err and err.endswith(NEW_BUNDLE), err
    next_year = certificate("K001", key, ca, not_before=now + 365 * DAY, not_after=now + 730 * DAY)
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(next_year)))
    assert "the device certificate is not valid before" in err, err
    assert "this device's clock says" in err and "check the device's clock" in err, err
    # the chain's CA certificate out of its dates (same key: the signatures still verify)
    old_ca = with_dates(ca[0], ca[1], now - 3650 * DAY, now - DAY)
    err = _refused(capsys, data, signed_bundle(desk, genuine, ca_cert_pem=pem(old_ca)))
    assert "the chain's CA certificate in the bundle expired on" in err, err
    _still_enrols(capsys, data, desk, genuine)


def test_the_clock_skew_allowed_for_a_certificate_is_the_member_codes_one(tmp_path, desk):
    now = datetime.now(UTC)
    starts, ends = now + timedelta(hours=1), now + 5 * DAY
    data, genuine = _paired(tmp_path, desk, "default")
    cert = certificate(
        "K001", _device_public(data), desk_ca(desk), not_before=starts, not_after=ends
    )
    bundle = replace(genuine, device_cert_pem=pem(cert))
    for moment, code in (
        (starts - timedelta(seconds=91), "certificate_not_yet_valid"),
        (ends + timedelta(seconds=91), "certificate_expired"),
    ):
        with pytest.raises(Refusal) as err:
            apply_enrolment(data, bundle, now=moment)
        assert err.value.code == code
    assert apply_enrolment(data, bundle, now=starts - timedelta(seconds=90)).device_id == "K001"
    # a device configured with a wider allowance takes it
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.toml").write_text("[security]\nmember_code_skew_s = 300\n")
    wide, genuine = _paired(tmp_path, desk, "wide")
    cert = certificate(
        "K002", _device_public(wide), desk_ca(desk), not_before=starts, not_after=ends
    )
    bundle = replace(genuine, device_cert_pem=pem(cert))
    assert apply_enrolment(wide, bundle, now=starts - timedelta(seconds=299)).device_id == "K002"


def test_a_certificate_from_a_look_alike_ca_is_refused_as_not_signed_by_the_chains_ca(
    tmp_path, desk, capsys
):
    data, genuine = _paired(tmp_path, desk)
    now = datetime.now(UTC)
    look_alike = look_alike_ca(desk)
    assert look_alike[0].subject == desk_ca(desk)[0].subject
    forged = certificate(
        "K001", _device_public(data), look_alike, not_before=now - DAY, not_after=now + 300 * DAY
    )
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(forged)))
    assert "the device certificate is not signed by the chain's CA" in err, err
    assert err.endswith(NEW_BUNDLE), err
    _still_enrols(capsys, data, desk, genuine)


def test_a_ca_certificate_that_is_not_a_ca_is_refused(tmp_path, desk, capsys):
    data, genuine = _paired(tmp_path, desk)
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Store S001 printer")])
    no_signing = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    for not_a_ca in (
        certificate(  # a client certificate, not a CA
            "Store S001 printer",
            key.public_key(),
            (name, key),
            not_before=now - DAY,
            not_after=now + 300 * DAY,
        ),
        certificate(  # a CA that may not sign certificates
            "Store S001 printer",
            key.public_key(),
            (name, key),
            not_before=now - DAY,
            not_after=now + 300 * DAY,
            ca=True,
            key_usage=no_signing,
            extended=(),
        ),
    ):
        device = certificate(
            "K001",
            _device_public(data),
            (not_a_ca, key),
            not_before=now - DAY,
            not_after=now + 300 * DAY,
        )
        bundle = signed_bundle(
            desk, genuine, ca_cert_pem=pem(not_a_ca), device_cert_pem=pem(device)
        )
        err = _refused(capsys, data, bundle)
        assert "the bundle's CA certificate 'Store S001 printer' is not a CA certificate" in err
        assert err.endswith(NEW_BUNDLE), err
    _still_enrols(capsys, data, desk, genuine)


def test_a_device_certificate_not_for_a_client_login_is_refused(tmp_path, desk, capsys):
    data, genuine = _paired(tmp_path, desk)
    now, key, ca = datetime.now(UTC), _device_public(data), desk_ca(desk)
    dates: dict[str, Any] = {"not_before": now - DAY, "not_after": now + 300 * DAY}
    server = certificate("K001", key, ca, extended=(ExtendedKeyUsageOID.SERVER_AUTH,), **dates)
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(server)))
    assert "not for a client's TLS login" in err, err
    sub_ca = certificate("K001", key, ca, ca=True, **dates)
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(sub_ca)))
    assert "the device certificate is a CA certificate" in err, err


def test_a_truncated_or_damaged_bundle_file_is_refused(tmp_path, desk, capsys):
    data, genuine = _paired(tmp_path, desk)
    whole = signed_bundle(desk, genuine)
    for damaged in (
        whole[: len(whole) // 2],
        whole[:-1],
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b"[1, 2]",
        json.dumps({"payload": 5, "signature": "AA=="}).encode(),
        json.dumps({"signature": "AA=="}).encode(),
        b"[" * 100_000,
    ):
        err = _refused(capsys, data, damaged)
        assert "not an enrolment bundle, or a damaged or truncated one" in err, (damaged, err)
        assert err.endswith("copy the bundle file from HQ again"), err
    _still_enrols(capsys, data, desk, genuine)


def test_bundle_fields_of_the_wrong_type_are_refused(tmp_path, desk, capsys):
    data, genuine = _paired(tmp_path, desk)
    for field, value, says in (
        ("device_cert_pem", 5, "device_cert_pem is not a string but int"),
        ("ca_cert_pem", None, "ca_cert_pem is not a string but NoneType"),
        ("pairing_code", 12345, "pairing_code is not a string but int"),
        ("lookup_key_sealed", ["AA=="], "lookup_key_sealed is not a string but list"),
        ("store_id", {"id": "S001"}, "store_id is not a string but dict"),
        ("hq_update_public_key_pem", 1.5, "hq_update_public_key_pem is not a string but float"),
        ("broker_port", "8883", "broker_port is not an integer but str"),
        ("card_range_start", True, "card_range_start is not an integer but bool"),
        ("card_range_end", 149_999.0, "card_range_end is not an integer but float"),
    ):
        err = _refused(capsys, data, signed_bundle(desk, genuine, **{field: value}))
        assert says in err and err.endswith(NEW_BUNDLE), (field, err)
    payload = {"format": 2, **asdict(genuine)}
    del payload["device_id"]
    for bad, says in (
        (payload, "it lacks device_id"),
        ({**payload, "device_id": "K001", "colour": "red"}, "unknown field 'colour'"),
        ("an enrolment", "it is not a JSON object"),
        ([payload], "it is not a JSON object"),
        ({**payload, "format": True}, "format True is not 2"),
    ):
        err = _refused(capsys, data, signed_payload(desk, bad))
        assert f"enrolment payload unusable: {says}" in err and err.endswith(NEW_BUNDLE), err
    _still_enrols(capsys, data, desk, genuine)


def test_unreadable_certificates_keys_or_settings_in_a_bundle_are_refused(tmp_path, desk, capsys):
    data, genuine = _paired(tmp_path, desk)
    garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    ec_key = _device_public(data).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for changes, says in (
        ({"device_cert_pem": garbage}, "the bundle's device certificate is not a readable"),
        ({"ca_cert_pem": "a CA"}, "the bundle's CA certificate is not a readable"),
        ({"hq_command_public_key_pem": "nope"}, "HQ command key is not an Ed25519 public key"),
        ({"hq_update_public_key_pem": ec_key.decode()}, "HQ update key is not an Ed25519"),
        ({"broker_port": 70_000}, "the bundle's settings: 'sync.broker_port'"),
        ({"card_range_start": 5, "card_range_end": 1}, "card_range_end must not be below"),
    ):
        err = _refused(capsys, data, signed_bundle(desk, genuine, **changes))
        assert says in err and err.endswith(NEW_BUNDLE), (changes, err)
        assert "config.toml" not in err, err
    _still_enrols(capsys, data, desk, genuine)


def test_a_certificate_for_another_key_or_on_a_device_never_paired_is_refused(
    tmp_path, desk, capsys
):
    data, genuine = _paired(tmp_path, desk)
    now, other = datetime.now(UTC), ec.generate_private_key(ec.SECP256R1()).public_key()
    theirs = certificate(
        "K001", other, desk_ca(desk), not_before=now - DAY, not_after=now + 300 * DAY
    )
    err = _refused(capsys, data, signed_bundle(desk, genuine, device_cert_pem=pem(theirs)))
    assert "the certificate was issued for another device's key" in err, err
    # a device that never printed a slip: it has no key, and none is made for it
    blank = tmp_path / "blank"
    (blank / "keys").mkdir(parents=True)
    (blank / "keys/hq-enrol.pub").write_bytes((data / "keys/hq-enrol.pub").read_bytes())
    err = _refused(capsys, blank, signed_bundle(desk, genuine))
    assert "no key pair yet: print a pairing slip first" in err, err
    assert not (blank / "tls").exists() and not (blank / "kiosk.db").exists()
    _still_enrols(capsys, data, desk, genuine)


def test_an_enrolled_device_refusing_a_reprovisioning_bundle_keeps_its_identity(
    tmp_path, desk, capsys
):
    data, genuine = _paired(tmp_path, desk)
    _still_enrols(capsys, data, desk, genuine)
    slip = start_pairing(data, serial="serial-dev")
    moved = desk.move("K001", slip.qr_text, store_id="S002", out_dir=tmp_path / "moved")
    bundle = verify_enrolment(moved.bundle_path.read_bytes(), enrol_public(desk))
    now = datetime.now(UTC)
    expired = certificate(
        "K001", _device_public(data), desk_ca(desk), not_before=now - 9 * DAY, not_after=now - DAY
    )
    err = _refused(
        capsys,
        data,
        signed_bundle(desk, bundle, device_cert_pem=pem(expired)),
        "--reprovision",
        "--skip-checks",
    )
    assert "the device certificate expired on" in err, err
    assert not (data / "provisioning/retired").exists()
    assert parse_config((data / "config.toml").read_text()).device.store_id == "S001"
