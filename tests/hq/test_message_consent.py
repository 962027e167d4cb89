"""HQ takes a kiosk's consent to messages and the phone number sealed for it, on SQLite and
PostgreSQL: kept encrypted with HQ's data key, never in a stored or relayed event."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, ReplicaBatch
from edge.security.contact import contact_public_pem, seal_phone
from edge.security.keys import HQ_CONTACT_PUBLIC_KEY_FILE
from edge.security.personal import PhoneVault
from edge.services import contact, members
from edge.services.replica import apply_replica_batch, replica_cursor
from edge.services.tx import transaction
from edge.storage.models import Member
from hq.audit import Actor
from hq.contact import may_message, set_message_consent
from hq.contact_key import PhoneIntake
from hq.feeds import feed_chunk
from hq.ledger import CentralLedger
from hq.models import Alert, AuditRecord, CentralMember, StoredEvent
from tests.hq.database import HQ_VAULT
from tests.hq.events import T0
from tests.sync.helpers import outbox_events

PHONE = "13800138000"
HQ_DATA_KEY = bytes(range(32))  # HQ_VAULT's
ids = IdFactory()


@pytest.fixture
def hq_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def kiosk(app, hq_key):
    """An enrolled kiosk: HQ's contact public key installed where the bundle puts it."""
    app.keys.keys_dir.mkdir(parents=True, exist_ok=True)
    (app.keys.keys_dir / HQ_CONTACT_PUBLIC_KEY_FILE).write_text(contact_public_pem(hq_key))
    return app


def central(s: Session, member_id: str) -> CentralMember:
    m = s.get(CentralMember, member_id)
    assert m is not None
    return m


def ledger_for(kiosk, hq_key) -> CentralLedger:
    intake = PhoneIntake(hq_key, PhoneVault(HQ_DATA_KEY, kiosk.keys.lookup_key))
    return CentralLedger(timedelta(minutes=10), HQ_VAULT, intake)


def ingest(engine, ledger: CentralLedger, events: list[Event], after: int = 0):
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=events[after:])
    with Session(engine) as s, s.begin():
        return ledger.ingest(s, "K001", batch, events[-1].at)


def test_hq_keeps_the_phone_encrypted_and_no_event_carries_it(engine, kiosk, hq_key):
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    events = outbox_events(kiosk)
    assert "phone_sealed" in events[0].data
    result = ingest(engine, ledger_for(kiosk, hq_key), events)
    assert result.alerts == []
    with Session(engine) as s:
        m = central(s, reg.member_id)
        assert m.message_consent_version == "2026-12" and m.phone_enc is not None
        assert PhoneVault(HQ_DATA_KEY, kiosk.keys.lookup_key).decrypt(m.phone_enc) == PHONE
        assert may_message(m)
        payloads = list(s.scalars(select(StoredEvent.payload)))
        audit = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "member.message_consent")
        ).one()
    assert payloads and all("phone_sealed" not in p for p in payloads)
    assert all(PHONE not in p for p in payloads)
    assert (audit.actor, audit.source, json.loads(audit.after)) == (
        "K001",
        "kiosk",
        {"message_consent": "2026-12"},
    )
    relayed = [ev for _, ev in result.stored]  # what goes on to the stores
    assert relayed and all("phone_sealed" not in ev.data for ev in relayed)
    assert all("phone_sealed" not in ev.stored_json for ev in relayed)


def test_a_sealed_number_that_is_not_the_members_is_refused(engine, kiosk, hq_key):
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    (registered,) = outbox_events(kiosk)
    forged = seal_phone(hq_key.public_key(), "13900139000", reg.member_id)
    event = registered.model_copy(update={"data": registered.data | {"phone_sealed": forged}})
    result = ingest(engine, ledger_for(kiosk, hq_key), [Event.model_validate(event.model_dump())])
    assert result.alerts == ["contact_phone_refused"]
    with Session(engine) as s:
        m = central(s, reg.member_id)
        assert m.phone_enc is None and m.message_consent_version == "2026-12"
        assert not may_message(m)
        alert = s.scalars(select(Alert).where(Alert.kind == "contact_phone_refused")).one()
    assert alert.subject == reg.member_id and "not the member's number" in alert.detail


def test_a_withdrawal_at_the_kiosk_reaches_hq(engine, kiosk, hq_key, clock):
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    ledger = ledger_for(kiosk, hq_key)
    ingest(engine, ledger, outbox_events(kiosk))
    clock.advance(hours=2)
    contact.set_message_consent(kiosk, False, card_no=reg.card_no)
    events = outbox_events(kiosk)
    assert events[-1].kind == "member.message_consent"
    ingest(engine, ledger, events, after=1)
    with Session(engine) as s:
        m = central(s, reg.member_id)
        assert m.message_consent_version is None and m.message_consent_at == clock.now
        assert m.phone_enc is None  # HQ holds a number only for members who agreed
        assert not may_message(m)
    clock.advance(hours=2)
    contact.set_message_consent(kiosk, True, phone=PHONE)  # given again: the number with it
    ingest(engine, ledger, outbox_events(kiosk), after=2)
    with Session(engine) as s:
        assert may_message(central(s, reg.member_id))


def test_without_a_contact_key_hq_keeps_the_consent_and_alerts_once(engine, kiosk):
    first = members.register_member(kiosk, PHONE, True, message_consent=True)
    second = members.register_member(kiosk, "13900139000", True, message_consent=True)
    result = ingest(engine, CentralLedger(timedelta(minutes=10), HQ_VAULT), outbox_events(kiosk))
    assert result.alerts == ["contact_key_missing"]
    with Session(engine) as s:
        for reg in (first, second):
            m = central(s, reg.member_id)
            assert m.message_consent_version == "2026-12" and m.phone_enc is None
        assert len(s.scalars(select(Alert).where(Alert.kind == "contact_key_missing")).all()) == 1
        payloads = list(s.scalars(select(StoredEvent.payload)))
    assert all("phone_sealed" not in p for p in payloads)


def test_a_new_phone_number_replaces_the_one_hq_holds(engine, kiosk, hq_key):
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    ledger = ledger_for(kiosk, hq_key)
    ingest(engine, ledger, outbox_events(kiosk))
    members.update_contact(kiosk, reg.card_no, "13900139000")
    events = outbox_events(kiosk)
    assert [e.kind for e in events[1:]] == ["member.updated", "member.message_consent"]
    ingest(engine, ledger, events[:2], after=1)  # the new hash alone: the old number goes
    with Session(engine) as s:
        m = central(s, reg.member_id)
        assert m.phone_enc is None and m.message_consent_version == "2026-12"
    ingest(engine, ledger, events, after=2)  # and the new one, sealed, comes with it
    with Session(engine) as s:
        m = central(s, reg.member_id)
        assert m.phone_enc is not None and may_message(m)
        vault = PhoneVault(HQ_DATA_KEY, kiosk.keys.lookup_key)
        assert vault.decrypt(m.phone_enc) == "13900139000"


def test_a_hash_that_still_names_the_number_keeps_it(engine, kiosk, hq_key):
    """A kiosk re-hashing its members under the chain's key sends the same number's hash."""
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    ledger = ledger_for(kiosk, hq_key)
    events = outbox_events(kiosk)
    ingest(engine, ledger, events)
    with Session(engine) as s:
        m = central(s, reg.member_id)
        same = m.phone_hash
    updated = Event(
        event_id=ids.new(),
        kind="member.updated",
        store_id="S001",
        device_id="K001",
        at=events[0].at,
        data={"member_id": reg.member_id, "phone_hash": same, "phone_masked": "138****8000"},
        seq=2,
    )
    ingest(engine, ledger, [*events, updated], after=1)
    with Session(engine) as s:
        assert may_message(central(s, reg.member_id))


def follow(engine, app) -> int:
    """Applies ``app``'s store feed after its cursor (its own events left out, as HQ does)."""
    with transaction(app) as tx:
        cursor = replica_cursor(tx, "store")
    with Session(engine) as s:
        last, items = feed_chunk(s, HQ_VAULT, app.store_id, cursor)
    items = [i for i in items if i.event is None or i.event.device_id != app.device_id]
    batch = ReplicaBatch(after_seq=cursor, to_seq=last, events=items, at=T0, feed="store")
    outcome = apply_replica_batch(app, batch)
    assert not outcome.gap and outcome.set_aside == 0, outcome
    return len(items)


def test_a_withdrawal_at_hq_reaches_the_kiosks_that_hold_the_member(engine, kiosk, hq_key):
    reg = members.register_member(kiosk, PHONE, True, message_consent=True)
    ingest(engine, ledger_for(kiosk, hq_key), outbox_events(kiosk))
    follow(engine, kiosk)
    assert members.show_member(kiosk, card_no=reg.card_no).message_consent
    with Session(engine) as s, s.begin():  # an unsubscribe reply to a message, say
        member = central(s, reg.member_id)
        assert set_message_consent(s, member, None, now=T0, actor=Actor(PHONE, "sms"))
    with Session(engine) as s:
        relayed = s.scalars(select(StoredEvent).where(StoredEvent.device_id == "HQ")).one()
        assert (relayed.kind, relayed.store_id) == ("member.message_consent", "S001")
        assert json.loads(relayed.payload)["data"] == {"member_id": reg.member_id, "version": None}
    assert follow(engine, kiosk) == 1
    assert not members.show_member(kiosk, card_no=reg.card_no).message_consent
    with kiosk.db.read() as s:
        row = s.get(Member, reg.member_id)
        assert row is not None and row.message_consent_at == T0
    assert follow(engine, kiosk) == 0  # once
