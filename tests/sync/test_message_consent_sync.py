"""Consent to messages through the real broker: the phone sealed at one store's kiosk reaches
HQ only, HQ keeps it under its data key, and the stores that hold the member learn the
consent (never the number); a withdrawal at a kiosk clears HQ's number."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from edge.security.contact import contact_public_pem
from edge.security.keys import HQ_CONTACT_PUBLIC_KEY_FILE
from edge.security.personal import PhoneVault
from edge.services.contact import set_message_consent
from edge.services.members import register_member, show_member
from edge.sync.agent import Agent
from hq.contact import may_message
from hq.contact_key import load_contact_key, write_contact_key
from hq.models import CentralMember, StoredEvent
from hq.service import HqService
from tests.hq.database import hq_data_key_file
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import caught_up, drained, hq_config

PHONE = "13800138000"


def test_consent_and_the_sealed_phone_across_the_chain(broker, tmp_path):
    hq_keys = tmp_path / "hq-keys"
    contact = load_contact_key(write_contact_key(hq_keys))
    assert contact is not None
    lookup = os.urandom(32)  # the chain's lookup key, as enrolment installs it everywhere
    (hq_keys / "hq-lookup.key").write_bytes(lookup)
    (hq_keys / "hq-lookup.key").chmod(0o600)
    hq = HqService(
        hq_config(
            broker,
            tmp_path,
            contact_key_file=str(hq_keys / "hq-contact.pem"),
            lookup_key_file=str(hq_keys / "hq-lookup.key"),
        )
    )
    dirs = [
        make_data_dir(tmp_path, broker, "K001", "S001", 1),
        make_data_dir(tmp_path, broker, "K002", "S002", 50_000),
    ]
    for data in dirs:
        (data / "keys" / "lookup.key").write_bytes(lookup)
        (data / "keys" / "lookup.key").chmod(0o600)
        (data / "keys" / HQ_CONTACT_PUBLIC_KEY_FILE).write_text(contact_public_pem(contact))
    a, b = (open_app(d) for d in dirs)
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    hq_vault = PhoneVault(Path(hq_data_key_file()).read_bytes(), lookup)
    try:
        member = register_member(a, PHONE, consent=True)
        wait_until(drained(a), 20, "the registration at HQ")
        assert not show_member(b, card_no=member.card_no).message_consent  # B holds them now

        set_message_consent(a, True, card_no=member.card_no)
        wait_until(drained(a), 20, "the consent at HQ")
        with Session(hq.engine) as s:
            central = s.get(CentralMember, member.member_id)
            assert central is not None and may_message(central)
            assert central.phone_enc is not None
            assert hq_vault.decrypt(central.phone_enc) == PHONE
            payloads = list(s.scalars(select(StoredEvent.payload)))
        assert payloads and not any("phone_sealed" in p for p in payloads)
        with hq.engine.connect() as conn:  # HQ's tables show the number nowhere in clear
            raw = repr(conn.execute(text("SELECT * FROM hq_member")).all())
        assert PHONE not in raw
        wait_until(
            lambda: show_member(b, card_no=member.card_no).message_consent,
            20,
            "store B hearing of the consent",
        )
        with b.db.read() as s:  # store B's outbox and replica never saw the number
            assert PHONE not in repr(s.execute(text("SELECT * FROM member")).all())

        set_message_consent(a, False, phone=PHONE)
        wait_until(drained(a), 20, "the withdrawal at HQ")
        with Session(hq.engine) as s:
            central = s.get(CentralMember, member.member_id)
            assert central is not None and not may_message(central)
            assert central.message_consent_version is None and central.phone_enc is None
        wait_until(caught_up(b, hq.engine), 20, "store B's feed")
        assert not show_member(b, card_no=member.card_no).message_consent
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()
