"""A member's consent to messages at HQ: the one place it is read and changed.

Consent to messages is apart from the membership terms: a member may hold a card and refuse
reminders. It is given at a kiosk (the registration's event, or a later change), and may be
withdrawn at a kiosk, on the member page, or by replying to a message; every door calls
:func:`set_message_consent`, which records who changed it in HQ's audit, in the caller's
transaction. A change made at HQ (any door but a kiosk's event) reaches the kiosks of the
stores that hold the member as an event of HQ's own (:func:`relay_consent`), so their screens
say whether reminders are on.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from edge.domain.ids import IdFactory
from edge.protocol import Event
from hq.audit import Actor, record
from hq.feeds import append, holders
from hq.models import CentralMember, StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["HQ_DEVICE", "KIOSK_SOURCE", "may_message", "relay_consent", "set_message_consent"]

HQ_DEVICE = "HQ"
"""The ``device_id`` of the events HQ itself makes for the stores' feeds."""
KIOSK_SOURCE = "kiosk"
"""The audit source of a change a kiosk's event brought (not relayed back: the event is)."""
MESSAGE_CONSENT = "member.message_consent"
_ids = IdFactory()


def may_message(member: CentralMember) -> bool:
    """Whether HQ may send this member reminders: consent in force and a number to send to."""
    return (
        member.message_consent_version is not None
        and member.phone_enc is not None
        and not member.deleted
        and member.merged_into is None
    )


def set_message_consent(
    session: Session,
    member: CentralMember,
    version: str | None,
    *,
    now: datetime,
    actor: Actor,
) -> bool:
    """Gives (``version``: the message terms agreed to) or withdraws (``None``) the member's
    consent to messages; False when it was so already (nothing recorded).

    A withdrawal, at any door, forgets the number HQ held for messages: giving consent again
    brings the number again (sealed from a kiosk, or typed on the member page and checked
    against the member's lookup hash)."""
    if member.message_consent_version == version:
        return False
    before = member.message_consent_version
    member.message_consent_version, member.message_consent_at = version, now
    if version is None:
        member.phone_enc = None  # HQ holds a number only for members who agreed
    record(
        session,
        actor,
        "member.message_consent",
        member.id,
        now,
        before={"message_consent": before},
        after={"message_consent": version},
        store_id=member.store_id,
    )
    if actor.source != KIOSK_SOURCE:
        relay_consent(session, member, now)
    return True


def relay_consent(session: Session, member: CentralMember, now: datetime) -> int:
    """Stores a ``member.message_consent`` event of HQ's own (``device_id`` ``HQ``, never a
    phone number) saying the member's consent as it is now, numbered in the chain like the
    devices' events and put in the feeds of the stores that hold the member; returns its
    ``hq_seq``. A kiosk of a version before it ignores the kind.

    It takes the chain's number, so call it last in the transaction, after the member row is
    changed (the order the ingest locks them in).
    """
    from hq.ledger import take_numbers  # the ledger applies kiosks' consents through here

    hq_seq = take_numbers(session, 1)
    event = Event(
        event_id=_ids.new(),
        kind=MESSAGE_CONSENT,
        store_id=member.store_id,
        device_id=HQ_DEVICE,
        at=now,
        data={"member_id": member.id, "version": member.message_consent_version},
        seq=hq_seq,
    )
    session.add(
        StoredEvent(
            hq_seq=hq_seq,
            event_id=event.event_id,
            device_id=HQ_DEVICE,
            store_id=member.store_id,
            device_seq=hq_seq,
            kind=MESSAGE_CONSENT,
            at=now,
            payload=event.stored_json,
            received_at=now,
        )
    )
    session.flush()
    stores = sorted(holders(session, [member.id]).get(member.id, set()))
    append(session, {s: [(hq_seq, None)] for s in stores})
    return hq_seq
