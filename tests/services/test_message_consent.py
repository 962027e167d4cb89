"""Consent to messages at the kiosk: recorded with its version, and the phone sealed for HQ only."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from edge.domain.errors import IntegrityError, NotFound
from edge.lifecycle.backup import create_backup
from edge.provisioning.identity import ensure_device_key
from edge.security.contact import CONTACT_PURPOSE, open_phone
from edge.security.keys import HQ_CONTACT_PUBLIC_KEY_FILE
from edge.security.sealing import unseal
from edge.services import contact, members
from edge.services.personal import as_sent
from edge.storage.models import AuditRecord, Member, OutboxEvent
from hq.contact_key import CONTACT_KEY_FILE, load_contact_key, write_contact_key

PHONE = "13800138000"


@pytest.fixture
def hq_key(tmp_path) -> ec.EllipticCurvePrivateKey:
    path = write_contact_key(tmp_path / "hq-ca")
    key = load_contact_key(path)
    assert key is not None
    return key


def install(app, key: ec.EllipticCurvePrivateKey) -> None:
    """HQ's contact public key where the enrolment bundle puts it."""
    from edge.security.contact import contact_public_pem

    app.keys.keys_dir.mkdir(parents=True, exist_ok=True)
    (app.keys.keys_dir / HQ_CONTACT_PUBLIC_KEY_FILE).write_text(contact_public_pem(key))


def sent(app, kind: str) -> list[dict]:
    with app.db.read() as s:
        rows = s.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.kind == kind).order_by(OutboxEvent.seq)
        )
        return [json.loads(as_sent(app, p))["data"] for p in rows]


def test_consent_is_recorded_with_its_version_and_the_phone_sealed_for_hq(app, hq_key, clock):
    install(app, hq_key)
    reg = members.register_member(app, PHONE, True, message_consent=True)
    with app.db.read() as s:
        m = s.get(Member, reg.member_id)
        assert (m.message_consent_version, m.message_consent_at) == ("2026-12", clock.now)
        audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "member.register"))
        detail = json.loads(next(iter(audit)).detail)
    assert detail["message_consent_version"] == "2026-12" and "phone_sealed" not in detail
    assert reg.view.message_consent
    (data,) = sent(app, "member.registered")
    assert data["message_consent_version"] == "2026-12"
    assert open_phone(hq_key, data["phone_sealed"], reg.member_id) == PHONE
    other = members.register_member(app, "13900139000", True).member_id
    with pytest.raises(IntegrityError):  # bound to the member: no use for another one
        open_phone(hq_key, data["phone_sealed"], other)
    with pytest.raises(IntegrityError):  # and only HQ's key opens it
        open_phone(ec.generate_private_key(ec.SECP256R1()), data["phone_sealed"], reg.member_id)


def test_without_consent_no_phone_leaves_but_hashed_and_masked(app, hq_key):
    install(app, hq_key)
    reg = members.register_member(app, PHONE, True)
    (data,) = sent(app, "member.registered")
    assert "phone_sealed" not in data and "message_consent_version" not in data
    assert PHONE not in json.dumps(data)
    with app.db.read() as s:
        assert s.get(Member, reg.member_id).message_consent_version is None
    assert not reg.view.message_consent


def test_consent_without_a_contact_key_is_kept_and_sent_without_the_phone(app, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.services.contact"):
        reg = members.register_member(app, PHONE, True, message_consent=True)
    (data,) = sent(app, "member.registered")
    assert data["message_consent_version"] == "2026-12" and "phone_sealed" not in data
    assert "no HQ contact key" in caplog.text
    with app.db.read() as s:
        assert s.get(Member, reg.member_id).message_consent_version == "2026-12"


def test_turned_off_and_on_later_each_an_event_and_the_phone_sealed_again(app, hq_key, clock):
    install(app, hq_key)
    reg = members.register_member(app, PHONE, True)
    clock.advance(days=1)
    view = contact.set_message_consent(app, True, card_no=reg.card_no)
    assert view.message_consent
    again = contact.set_message_consent(app, True, phone=PHONE)  # so already: nothing happens
    assert again.message_consent
    clock.advance(days=1)
    off = contact.set_message_consent(app, False, phone=PHONE, actor="console")
    assert not off.message_consent
    given, withdrawn = sent(app, "member.message_consent")
    assert (given["member_id"], given["version"]) == (reg.member_id, "2026-12")
    assert open_phone(hq_key, given["phone_sealed"], reg.member_id) == PHONE
    assert withdrawn == {"member_id": reg.member_id, "version": None}
    with app.db.read() as s:
        m = s.get(Member, reg.member_id)
        assert (m.message_consent_version, m.message_consent_at) == (None, clock.now)
        actors = [
            (a.actor, json.loads(a.detail)["version"])
            for a in s.scalars(
                select(AuditRecord).where(AuditRecord.action == "member.message_consent")
            )
        ]
    assert actors == [("member", "2026-12"), ("console", None)]


def test_bad_input_changes_nothing(app, hq_key):
    install(app, hq_key)
    with pytest.raises(NotFound):
        contact.set_message_consent(app, True, phone="13700137000")
    reg = members.register_member(app, PHONE, True)
    with pytest.raises(Exception, match="exactly one"):
        contact.set_message_consent(app, True, card_no=reg.card_no, phone=PHONE)
    assert sent(app, "member.message_consent") == []


def test_the_backup_and_the_database_hold_nothing_a_kiosk_key_opens(app, hq_key, tmp_path):
    install(app, hq_key)
    device_key = ensure_device_key(app.data_dir / "tls" / "device.key")
    reg = members.register_member(app, PHONE, True, message_consent=True)
    info = create_backup(
        app.data_dir / "kiosk.db", tmp_path / "backups", store_id="S001", device_id="K001"
    )
    raw = gzip.decompress(info.path.read_bytes())
    assert PHONE.encode() not in raw  # never in clear
    copy = tmp_path / "copy.db"
    copy.write_bytes(raw)
    conn = sqlite3.connect(copy)
    try:
        payloads = [p for (p,) in conn.execute("SELECT payload FROM outbox")]
        member_row = conn.execute("SELECT * FROM member").fetchone()
    finally:
        conn.close()
    (sealed,) = [json.loads(p)["data"]["phone_sealed"] for p in payloads if "phone_sealed" in p]
    assert all(sealed not in repr(v) for v in member_row)  # the sealed number: event only
    blob = base64.b64decode(sealed)
    with pytest.raises(IntegrityError):  # the kiosk's only EC private key: its device key
        unseal(device_key, blob, purpose=CONTACT_PURPOSE, context=(reg.member_id,))
    for field in ("phone", "name"):  # nor its data key, which keeps its own copy
        with pytest.raises(IntegrityError):
            app.vault.decrypt_text(field, blob)
    with pytest.raises(IntegrityError):
        app.vault.decrypt(blob)
    assert not any(p.suffix == ".pem" and "contact" in p.name for p in app.keys.keys_dir.iterdir())
    assert CONTACT_KEY_FILE not in {p.name for p in app.data_dir.rglob("*")}
    assert open_phone(hq_key, sealed, reg.member_id) == PHONE  # HQ's key, held at HQ only


def test_the_console_turns_reminders_on_and_off(app, hq_key, capsys):
    from edge.cli.main import main

    install(app, hq_key)
    members.register_member(app, PHONE, True)
    base = ["--data-dir", str(app.data_dir)]
    assert main([*base, "member", "messages", "--phone", PHONE, "on"]) == 0
    assert "messages   on" in capsys.readouterr().out
    assert main([*base, "member", "messages", "--phone", PHONE, "off"]) == 0
    assert "messages   off" in capsys.readouterr().out
    assert main([*base, "member", "messages", "--phone", PHONE, "maybe"]) != 0
    assert main([*base, "member", "messages", "on"]) != 0  # names nobody
    given, withdrawn = sent(app, "member.message_consent")
    assert (given["version"], withdrawn["version"]) == ("2026-12", None)
    assert "phone_sealed" in given
    assert len(sent(app, "member.message_consent")) == 2  # the refused ones changed nothing
