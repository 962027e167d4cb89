"""HQ's contact and member-code keys: made at HQ, carried by the enrolment bundle, installed
on the kiosk, and what the kiosk seals a consenting member's phone number to."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from edge.app import AppContext
from edge.cli.main import main
from edge.domain.errors import IntegrityError, InvalidInput
from edge.provisioning.bundle import (
    COMPACT_QR_PREFIX,
    FORMAT,
    MAX_QR_TEXT,
    bundle_from_qr,
    bundle_to_qr,
    issue_bundle,
    verify_enrolment,
)
from edge.provisioning.enrolment import apply_enrolment
from edge.provisioning.pairing import start_pairing
from edge.security.contact import open_phone
from edge.security.keys import load_private_key
from edge.services.members import register_member
from edge.services.personal import as_sent
from edge.storage.models import OutboxEvent
from hq.contact_key import CONTACT_KEY_FILE, load_contact_key
from hq.enrol import MEMBER_CODE_KEY_FILE, EnrolmentDesk
from tests.lifecycle.hq_desk import make_desk, signed_payload


def enrol_public(desk: EnrolmentDesk):
    return serialization.load_pem_public_key((desk.settings.ca_dir / "hq-enrol.pub").read_bytes())


def desk_key(desk: EnrolmentDesk) -> Ed25519PrivateKey:
    return load_private_key(desk.settings.enrol_key)


def write_member_code_key(ca_dir: Path) -> Ed25519PrivateKey:
    """HQ's member-code key, made as HQ's operators make it."""
    assert main(["hq", "member-code-key", "--out", str(ca_dir)]) == 0
    return load_private_key(ca_dir / MEMBER_CODE_KEY_FILE)


@pytest.fixture
def desk(tmp_path) -> EnrolmentDesk:
    return make_desk(tmp_path, tmp_path / "ca")


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def test_contact_key_is_made_once_private_and_never_overwritten(tmp_path, capsys):
    ca = tmp_path / "ca"
    assert main(["hq", "contact-key", "--out", str(ca)]) == 0
    path = ca / CONTACT_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert str(path) in capsys.readouterr().out
    made = path.read_bytes()
    assert main(["hq", "contact-key", "--out", str(ca)]) != 0
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == made
    assert load_contact_key(path) is not None


def test_the_bundle_carries_hqs_keys_and_the_kiosk_seals_to_the_contact_key(data, desk):
    ca = desk.settings.ca_dir
    assert main(["hq", "contact-key", "--out", str(ca)]) == 0
    code_key = write_member_code_key(ca)
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=data.parent / "out")
    assert issued.qr_chars <= MAX_QR_TEXT  # still one QR code with both keys
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    hq_contact = load_contact_key(ca / CONTACT_KEY_FILE)
    assert hq_contact is not None
    assert "PRIVATE" not in enrolment.hq_contact_public_key_pem
    apply_enrolment(data, enrolment)
    app = AppContext.open(data)
    try:
        installed = app.keys.contact_public_key()
        assert installed is not None and installed.public_numbers() == (
            hq_contact.public_key().public_numbers()
        )
        assert app.keys.member_code_public_key("") == code_key.public_key()
        reg = register_member(app, "13800138000", True, message_consent=True)
        with app.db.read() as s:
            payload = s.scalar(
                select(OutboxEvent.payload).where(OutboxEvent.kind == "member.registered")
            )
        assert payload is not None
        sealed = json.loads(as_sent(app, payload))["data"]["phone_sealed"]
        assert open_phone(hq_contact, sealed, reg.member_id) == "13800138000"
    finally:
        app.close()


def test_without_hqs_keys_the_kiosk_has_no_contact_key_and_keeps_the_dev_code_key(data, desk):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=data.parent / "out")
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    assert (enrolment.hq_contact_public_key_pem, enrolment.hq_member_code_public_key_pem) == (
        "",
        "",
    )
    apply_enrolment(data, enrolment)
    app = AppContext.open(data)
    try:
        assert app.keys.contact_public_key() is None
        verifying = app.keys.member_code_public_key("")  # the dev key, made on first use
        dev = load_private_key(app.keys.keys_dir / "member-code-signing.pem")
        assert verifying == dev.public_key()
    finally:
        app.close()


def test_an_older_desks_bundle_still_applies_and_a_bad_key_is_refused(data, desk, tmp_path):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=tmp_path / "out")
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    older = {"format": FORMAT, **asdict(enrolment)}
    del older["hq_contact_public_key_pem"], older["hq_member_code_public_key_pem"]
    assert verify_enrolment(signed_payload(desk, older), enrol_public(desk)) == enrolment
    bad = verify_enrolment(
        signed_payload(desk, older | {"hq_contact_public_key_pem": enrolment.ca_cert_pem}),
        enrol_public(desk),
    )
    with pytest.raises(IntegrityError) as err:
        apply_enrolment(data, bad)
    assert err.value.code == "bundle_invalid" and "contact key" in err.value.message
    assert not (data / "config.toml").exists() or "S007" not in (data / "config.toml").read_text()
    assert not (data / "keys" / "hq-contact.pub").exists()
    assert len(bundle_to_qr(issued.bundle_path.read_bytes())) <= MAX_QR_TEXT


def test_a_bundle_too_long_for_the_first_qr_form_travels_in_the_compact_one(data, desk, tmp_path):
    request = start_pairing(data, serial="serial-1")
    issued = desk.enrol(request.qr_text, store_id="S007", out_dir=tmp_path / "out")
    enrolment = verify_enrolment(issued.bundle_path.read_bytes(), enrol_public(desk))
    fat = issue_bundle(replace(enrolment, catalogue_version=os.urandom(300).hex()), desk_key(desk))
    text = bundle_to_qr(fat)
    assert text.startswith(COMPACT_QR_PREFIX) and len(text) <= MAX_QR_TEXT
    assert bundle_from_qr(text) == fat
    assert verify_enrolment(bundle_from_qr(text), enrol_public(desk)) == verify_enrolment(
        fat, enrol_public(desk)
    )
    with pytest.raises(InvalidInput):
        bundle_from_qr(COMPACT_QR_PREFIX + "eJwDAAAAAAE")  # nothing inside
    small = issued.bundle_path.read_bytes()
    assert bundle_to_qr(small).startswith("MCKENROL1:")  # what every device reads, when it fits
