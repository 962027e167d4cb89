"""A member's name and birthday, encrypted at rest: the one way they are read, written and erased.

The ledger keeps them only as ciphertext (``member.name_cipher``, ``member.birthday_cipher``,
the data key's AES-256-GCM, as the phone number). No plaintext column is kept beside them: no
query of the kiosk selects members by name or birthday (the birthday perk and the member view
look at one member, whose row is decrypted), so a stolen database shows neither.

The registration's event carries them to HQ (and on to the stores that hold the member); in
the outbox they wait encrypted too (:func:`sealed_for_outbox`), and are put back into the
event's data only as it is sent (:func:`as_sent`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.errors import IntegrityError
from edge.storage.models import OutboxEvent

if TYPE_CHECKING:
    from edge.app import AppContext
    from edge.storage.models import Member

__all__ = [
    "OUTBOX_FIELD",
    "as_sent",
    "birthday_of",
    "erase_personal",
    "name_of",
    "sealed_for_outbox",
    "set_personal",
    "without_personal",
]

log = logging.getLogger(__name__)

OUTBOX_FIELD = "personal"
"""The key of a stored event's body holding its personal fields, encrypted (base64)."""
_MARK = f'"{OUTBOX_FIELD}":'
_EVENT = "event"


def name_of(app: AppContext, member: Member) -> str | None:
    """The member's name as they gave it, or ``None``.

    Raises:
        IntegrityError: ``personal_undecryptable`` (tampered, or another device's data key).
    """
    return app.vault.decrypt_name(member.name_cipher)


def birthday_of(app: AppContext, member: Member) -> date | None:
    """The member's birthday, or ``None``.

    Raises:
        IntegrityError: ``personal_undecryptable`` (tampered, or another device's data key).
    """
    return app.vault.decrypt_birthday(member.birthday_cipher)


def set_personal(app: AppContext, member: Member, name: str | None, birthday: date | None) -> None:
    """Stores the member's name and birthday, encrypted (``None`` keeps none)."""
    member.name_cipher = app.vault.encrypt_name(name)
    member.birthday_cipher = app.vault.encrypt_birthday(birthday)


def erase_personal(session: Session, member: Member) -> None:
    """Forgets the member's personal data (deletion on request): phone, name and birthday,
    in the member row and in their registration's event if it is still in the outbox here."""
    for row in session.scalars(
        select(OutboxEvent).where(
            OutboxEvent.kind == "member.registered",
            OutboxEvent.payload.contains(f'"member_id": "{member.id}"'),
        )
    ):
        row.payload = without_personal(row.payload)
    member.phone_hash = None
    member.phone_cipher = None
    member.phone_masked = ""
    member.name_cipher = None
    member.birthday_cipher = None


def sealed_for_outbox(app: AppContext, fields: Mapping[str, Any]) -> str | None:
    """An event's personal fields (those not ``None``) encrypted for its outbox row, or
    ``None`` when there are none."""
    present = {k: v for k, v in fields.items() if v is not None}
    if not present:
        return None
    text = json.dumps(present, ensure_ascii=False, sort_keys=True, default=str)
    return base64.b64encode(app.vault.encrypt_text(_EVENT, text)).decode("ascii")


def as_sent(app: AppContext, payload: str) -> str:
    """A stored event's JSON as it goes to HQ: its personal fields back in its data.

    Most events carry none and are returned as they are, unparsed (the outbox drains a
    backlog of a hundred thousand events). Fields that no longer decrypt (another device's
    data key restored here) are left out with an error in the log: the event still goes, as
    a registration without a name would.
    """
    if _MARK not in payload:
        return payload
    body = json.loads(payload)
    sealed = body.pop(OUTBOX_FIELD, None)
    if sealed is not None:
        try:
            fields = json.loads(app.vault.decrypt_text(_EVENT, base64.b64decode(sealed)))
        except (IntegrityError, binascii.Error, ValueError) as exc:
            log.error("event %s: its personal fields cannot be read: %s", body.get("event_id"), exc)
            fields = {}
        body["data"].update(fields)
    return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str)


def without_personal(payload: str) -> str:
    """A stored event's JSON with its personal fields gone (the member was deleted)."""
    if _MARK not in payload:
        return payload
    body = json.loads(payload)
    body.pop(OUTBOX_FIELD, None)
    return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str)
