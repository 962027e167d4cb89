"""A member's consent to messages at HQ: the one place it is read and changed.

Consent to messages is apart from the membership terms: a member may hold a card and refuse
reminders. It is given at a kiosk (the registration's event, or a later change), and may be
withdrawn at a kiosk, on the member page, or by replying to a message; every door calls
:func:`set_message_consent`, which records who changed it in HQ's audit, in the caller's
transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from hq.audit import Actor, record
from hq.models import CentralMember

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["may_message", "set_message_consent"]


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
    consent to messages; False when it was so already (nothing recorded)."""
    if member.message_consent_version == version:
        return False
    before = member.message_consent_version
    member.message_consent_version, member.message_consent_at = version, now
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
    return True
