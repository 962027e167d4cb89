"""A member's name and birthday, encrypted at rest: the one way they are read, written and erased.

The ledger keeps them only as ciphertext (``member.name_cipher``, ``member.birthday_cipher``,
the data key's AES-256-GCM, as the phone number). No plaintext column is kept beside them: no
query of the kiosk selects members by name or birthday (the birthday perk and the member view
look at one member, whose row is decrypted), so a stolen database shows neither.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.app import AppContext
    from edge.storage.models import Member

__all__ = ["birthday_of", "erase_personal", "name_of", "set_personal"]


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


def erase_personal(member: Member) -> None:
    """Forgets the member's personal data (deletion on request): phone, name and birthday."""
    member.phone_hash = None
    member.phone_cipher = None
    member.phone_masked = ""
    member.name_cipher = None
    member.birthday_cipher = None
