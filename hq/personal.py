"""A member's name and birthday at HQ, sealed with HQ's data key: the one way they are kept.

``hq_member.name_enc`` and ``birthday_enc`` hold them as ``phone_enc`` holds the phone
(AES-256-GCM, HQ's ``hq-data.key``). ``birth_month`` (1-12) stays in clear because the
coupon campaigns select "members whose birthday is this month" in SQL over the whole chain;
a month alone identifies nobody.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from edge.security.personal import TextVault

if TYPE_CHECKING:
    from hq.models import CentralMember

DATA_KEY_FILE = "hq-data.key"
"""HQ's data key's file name (``kiosk hq data-key`` makes it)."""

__all__ = [
    "DATA_KEY_FILE",
    "birthday_of",
    "erase_personal",
    "name_of",
    "personal_columns",
    "set_personal",
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
