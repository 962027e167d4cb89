"""A member's name and birthday at HQ, sealed with HQ's data key: the one way they are kept.

``hq_member.name_enc`` and ``birthday_enc`` hold them as ``phone_enc`` holds the phone
(AES-256-GCM, HQ's ``hq-data.key``). ``birth_month`` (1-12) stays in clear because the
coupon campaigns select "members whose birthday is this month" in SQL over the whole chain;
a month alone identifies nobody.

The registration's event brings them; HQ stores that event without them (the member row
keeps them sealed, so deleting the member there forgets them everywhere at HQ) and puts them
back, opened, only as it relays the event to a store (:func:`stored_json`, :func:`as_relayed`).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from edge.protocol import Event
from edge.security.personal import TextVault
from hq.models import CentralMember

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DATA_KEY_FILE = "hq-data.key"
"""HQ's data key's file name (``kiosk hq data-key`` makes it)."""

REGISTERED = "member.registered"
MESSAGE_CONSENT = "member.message_consent"
PERSONAL_KEYS = ("name", "birthday")
"""The personal fields of a registration's data (the phone travels hashed and masked)."""
SEALED_PHONE_KEY = "phone_sealed"
"""The phone number a kiosk sealed for HQ (a member who agreed to messages): HQ keeps it in
the member row (``phone_enc``) and never in a stored or relayed event."""

__all__ = [
    "DATA_KEY_FILE",
    "PERSONAL_KEYS",
    "as_relayed",
    "birthday_of",
    "erase_personal",
    "name_of",
    "personal_columns",
    "set_personal",
    "stored_json",
    "without_sealed_phone",
]


def personal_columns(vault: TextVault, name: str | None, birthday: date | None) -> dict[str, Any]:
    """The sealed columns of a member row (for a bulk INSERT of new members)."""
    return {
        "name_enc": vault.encrypt_name(name),
        "birthday_enc": vault.encrypt_birthday(birthday),
        "birth_month": birthday.month if birthday is not None else None,
    }


def set_personal(
    vault: TextVault, member: CentralMember, name: str | None, birthday: date | None
) -> None:
    """Keeps the member's name and birthday, sealed (``None`` keeps none)."""
    for column, value in personal_columns(vault, name, birthday).items():
        setattr(member, column, value)


def name_of(vault: TextVault, member: CentralMember) -> str | None:
    """The member's name, or ``None``.

    Raises:
        IntegrityError: ``personal_undecryptable`` (tampered, or not HQ's data key).
    """
    return vault.decrypt_name(member.name_enc)


def birthday_of(vault: TextVault, member: CentralMember) -> date | None:
    """The member's birthday, or ``None``.

    Raises:
        IntegrityError: ``personal_undecryptable`` (tampered, or not HQ's data key).
    """
    return vault.decrypt_birthday(member.birthday_enc)


def erase_personal(member: CentralMember) -> None:
    """Forgets the member's personal data (deletion on request): phone, name and birthday."""
    member.phone_masked = ""
    member.phone_hash = member.phone_enc = None
    member.name_enc = member.birthday_enc = None
    member.birth_month = None


def stored_json(event: Event) -> str:
    """The event's JSON as HQ stores it: a registration without its name and birthday, a
    registration or a change of consent to messages without the sealed phone number.

    Every other event is the JSON worked out once per event (:attr:`Event.stored_json`).
    """
    if event.kind == REGISTERED:
        dropped: tuple[str, ...] = (*PERSONAL_KEYS, SEALED_PHONE_KEY)
    elif event.kind == MESSAGE_CONSENT:
        dropped = (SEALED_PHONE_KEY,)
    else:
        return event.stored_json
    if all(event.data.get(k) is None for k in dropped):
        return event.stored_json
    data = {k: v for k, v in event.data.items() if k not in dropped}
    return event.model_copy(update={"data": data}).model_dump_json()


def without_sealed_phone(event: Event) -> Event:
    """The event as it may go on to a store: without the phone number a kiosk sealed for HQ."""
    if event.kind not in (REGISTERED, MESSAGE_CONSENT) or event.data.get(SEALED_PHONE_KEY) is None:
        return event
    data = {k: v for k, v in event.data.items() if k != SEALED_PHONE_KEY}
    # a new model, not a copy: a copy would keep the cached JSON and data of the original
    return Event.model_validate(event.model_dump() | {"data": data})


def as_relayed(session: Session, vault: TextVault, event: Event) -> Event:
    """A stored event as it goes on to a store: a registration gets back the member's name
    and birthday as HQ keeps them now (none once the member is deleted)."""
    if event.kind != REGISTERED:
        return event
    member = session.get(CentralMember, event.data.get("member_id"))
    if member is None or member.deleted:
        return event
    name, birthday = name_of(vault, member), birthday_of(vault, member)
    extra = {"name": name, "birthday": birthday.isoformat() if birthday else None}
    present = {k: v for k, v in extra.items() if v is not None}
    if not present:
        return event
    return event.model_copy(update={"data": event.data | present})
