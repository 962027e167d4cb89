"""A member's consent to messages (SMS reminders) at the kiosk, and their phone sealed for HQ.

Consent to messages is apart from the membership terms: a member may hold a card and refuse
reminders. It is given at registration (:func:`edge.services.members.register_member`'s
``message_consent``) or later (:func:`set_message_consent`: the touchscreen's member screen and
``kiosk member messages``), and withdrawn the same way. The kiosk records the version of the
message terms agreed to and when.

When consent is given, the member's phone number goes to HQ sealed to HQ's contact key
(:mod:`edge.security.contact`): only HQ opens it. The sealed number exists only in the
outbox event that carries it; the member row keeps the kiosk's own copy as before, under the
kiosk's data key. A kiosk that has no contact key yet (not enrolled) records the consent and
sends its version without the number; HQ cannot message that member until the consent is
given again at an enrolled kiosk.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from edge.app import AppContext
from edge.domain.errors import Refusal
from edge.domain.member_view import MemberView
from edge.security.contact import seal_phone
from edge.services.remote import ensure_here
from edge.services.tx import Tx, transaction
from edge.storage.models import Member

log = logging.getLogger(__name__)

MESSAGE_CONSENT = "member.message_consent"

__all__ = [
    "MESSAGE_CONSENT",
    "contact_key",
    "give_consent",
    "resend_number",
    "set_message_consent",
]


def contact_key(app: AppContext) -> ec.EllipticCurvePublicKey | None:
    """HQ's contact key as configured or installed by the enrolment bundle; None before
    enrolment.

    Raises:
        ConfigError: a configured or installed key file is unusable.
    """
    return app.keys.contact_public_key(app.config.security.contact_public_key)


def give_consent(
    tx: Tx, member: Member, phone: str | None, key: ec.EllipticCurvePublicKey | None
) -> dict[str, Any]:
    """Records the member's consent to the message terms in force; returns the fields the
    event carries: the version, and the phone sealed for HQ when both number and key are
    known."""
    version = tx.app.config.privacy.message_terms_version
    member.message_consent_version, member.message_consent_at = version, tx.now
    fields: dict[str, Any] = {"message_consent_version": version}
    if phone is not None and key is not None:
        fields["phone_sealed"] = seal_phone(key, phone, member.id)
    elif key is None:
        log.warning(
            "member %s agreed to messages but this kiosk has no HQ contact key (not enrolled?): "
            "HQ gets the consent without the phone number and cannot message them until it is "
            "given again at an enrolled kiosk",
            member.id,
        )
    else:
        log.warning(
            "member %s agreed to messages at a kiosk that does not hold their phone number: "
            "HQ gets the consent without it",
            member.id,
        )
    return fields


def resend_number(
    tx: Tx, member: Member, phone: str, key: ec.EllipticCurvePublicKey | None
) -> None:
    """A consenting member's new phone number for HQ (their consent unchanged): without it HQ
    would keep messaging the old one, which HQ forgets when the member's hash changes."""
    data: dict[str, Any] = {"member_id": member.id, "version": member.message_consent_version}
    if key is not None:
        data["phone_sealed"] = seal_phone(key, phone, member.id)
    else:
        log.warning(
            "member %s changed their phone number; this kiosk has no HQ contact key, so HQ "
            "cannot message them until reminders are turned on again at an enrolled kiosk",
            member.id,
        )
    tx.emit(MESSAGE_CONSENT, data)


def set_message_consent(
    app: AppContext,
    on: bool,
    card_no: str | None = None,
    phone: str | None = None,
    actor: str = "member",
) -> MemberView:
    """Gives (``on``) or withdraws the member's consent to messages, by card or phone.

    Nothing changes (and no event leaves) when it is so already. Giving it seals the phone
    number this kiosk holds (its own vault) to HQ's contact key, in the event only.

    Raises:
        Refusal: ``member_deleted``; NotFound: an unknown card or phone; InvalidInput:
            ``bad_selector`` unless exactly one of card and phone is given.
    """
    from edge.services.members import build_view, resolve_member

    ensure_here(app, card_no=card_no, phone=phone)
    key = contact_key(app) if on else None
    with transaction(app) as tx:
        member, card = resolve_member(tx.session, app, card_no, phone)
        if member.deleted_at is not None:
            raise Refusal("this membership was closed", code="member_deleted")
        if (member.message_consent_version is not None) != on:
            data: dict[str, Any] = {"member_id": member.id, "version": None}
            if on:
                number = app.vault.decrypt(member.phone_cipher) if member.phone_cipher else None
                given = give_consent(tx, member, number, key)
                data["version"] = given["message_consent_version"]
                if "phone_sealed" in given:
                    data["phone_sealed"] = given["phone_sealed"]
            else:
                member.message_consent_version, member.message_consent_at = None, tx.now
            member.updated_at = tx.now
            tx.audit(
                actor,
                MESSAGE_CONSENT,
                member.id,
                version=data["version"],
                phone_sealed="phone_sealed" in data,
            )
            tx.emit(MESSAGE_CONSENT, data)
            tx.session.flush()
        return build_view(tx.session, app, member, card)
