"""The second step of finding a member by phone at the screen: wrong answers and lockouts.

A phone number is easy to learn, so the screen also asks for the card's last four digits or
the birthday (MMDD). Three wrong answers within ten minutes lock that member out of phone
identification at this kiosk for ten minutes. The count is read from the audit log, where
every wrong answer and every phone identification is recorded anyway, so a restart of the
app lifts no lockout. :func:`identify_by_phone` is the whole step as the screen takes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.cards import require_usable
from edge.domain.errors import Refusal
from edge.domain.member_view import MemberView
from edge.security.personal import normalize_phone
from edge.services import lookups, members
from edge.services.personal import birthday_of
from edge.services.tx import transaction
from edge.storage.models import AuditRecord, Member

ATTEMPTS = 3
LOCKOUT = timedelta(minutes=10)
WRONG_ANSWER = "member.verify_failed"
LOOKUP = lookups.LOOKUP
LOCKED_MESSAGE = "too many wrong answers; please scan your card or ask the staff"


@dataclass(frozen=True)
class ProofState:
    """Wrong answers in a row (within the lockout period) and the end of a lockout in force."""

    failures: int
    locked_until: datetime | None


def proof_state(session: Session, member_id: str, now: datetime) -> ProofState:
    """What the last ``LOCKOUT`` of this kiosk's audit log says about ``member_id``.

    A phone identification clears the count; a wrong answer that locked starts a lockout
    and clears it too.
    """
    rows = session.execute(
        select(AuditRecord.action, AuditRecord.at, AuditRecord.detail)
        .where(
            # records dated after ``now`` (the clock was set back) do not count: a lockout
            # never lasts longer than LOCKOUT from now
            AuditRecord.at > now - LOCKOUT,
            AuditRecord.at <= now,
            AuditRecord.subject == member_id,
            AuditRecord.action.in_((WRONG_ANSWER, LOOKUP)),
        )
        .order_by(AuditRecord.seq)
    ).all()
    failures, until = 0, None
    for action, at, detail in rows:
        facts = json.loads(detail)
        if action == LOOKUP:
            if facts.get("channel") == "phone":
                failures = 0
        elif facts.get("locked"):
            failures, until = 0, at + LOCKOUT
        else:
            failures += 1
    return ProofState(failures, until if until is not None and until > now else None)


def check_not_locked(app: AppContext, member_id: str) -> None:
    """Refuses (``verify_locked``) while a lockout is in force for ``member_id``."""
    with app.db.read() as session:
        state = proof_state(session, member_id, app.clock())
    if state.locked_until is not None:
        raise Refusal(LOCKED_MESSAGE, code="verify_locked")


def record_wrong_answer(app: AppContext, member_id: str) -> bool:
    """Records a wrong answer; True when it is the one that locks."""
    with transaction(app) as tx:
        state = proof_state(tx.session, member_id, tx.now)
        locked = state.locked_until is not None or state.failures + 1 >= ATTEMPTS
        tx.audit("member", WRONG_ANSWER, member_id, locked=locked)
    return locked


def identify_by_phone(app: AppContext, phone: str, proof: str) -> MemberView:
    """The member with ``phone``, once ``proof`` matches the last four digits of their card or
    their birthday (MMDD); the identification is audited as a phone lookup.

    Raises:
        NotFound: ``unknown_phone``.
        Refusal: ``card_lost`` (no active card), the card's own refusal, ``verify_locked``
            while locked out or on the wrong answer that locks, else ``verify_failed``.
    """
    view = members.show_member(app, phone=normalize_phone(phone))
    if view.card_no is None or view.card_state is None:
        raise Refusal("this membership has no active card", code="card_lost")
    require_usable(view.card_no, view.card_state)
    check_not_locked(app, view.member_id)
    with app.db.read() as session:
        member = session.get(Member, view.member_id)
        birthday = birthday_of(app, member) if member is not None else None
    answers = {view.card_no[-4:]}
    if birthday is not None:
        answers.add(birthday.strftime("%m%d"))
    if proof.strip() not in answers:
        if record_wrong_answer(app, view.member_id):
            raise Refusal(LOCKED_MESSAGE, code="verify_locked")
        raise Refusal("the verification digits do not match", code="verify_failed")
    lookups.record_lookup(app, "member", view.member_id, "phone")
    return view
