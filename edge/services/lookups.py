"""Finding a member at the kiosk and at the desk, each lookup recorded in the audit log.

The kiosk's lookups are audited (``member.lookup`` with the channel: scan, phone or staff)
because the day's report counts them and the phone proof's lockout reads them
(:mod:`edge.services.phone_proof`). The console's ``kiosk member show`` and ``identify`` are
not lookups by a member and stay unaudited (:mod:`edge.services.members`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.cards import CardState
from edge.domain.member_view import MemberView
from edge.domain.staff import Permission
from edge.services import members
from edge.services.remote import ensure_here
from edge.services.staff import StaffIdentity, require
from edge.services.tx import transaction
from edge.storage.models import Card

LOOKUP = "member.lookup"


def record_lookup(app: AppContext, actor: str, member_id: str, channel: str) -> None:
    """Audits that ``actor`` looked ``member_id`` up through ``channel``."""
    with transaction(app) as tx:
        tx.audit(actor, LOOKUP, member_id, channel=channel)


def identify_at_kiosk(app: AppContext, scanned: str) -> MemberView:
    """A scanned member code or card number (:func:`members.identify`), audited."""
    view = members.identify(app, scanned)
    record_lookup(app, "member", view.member_id, "scan")
    return view


def newest_card(session: Session, member_id: str) -> Card | None:
    """The member's newest card that is not replaced (active, lost or blocked): the one staff
    act on when a member reports a card lost."""
    return session.scalar(
        select(Card)
        .where(Card.member_id == member_id, Card.state != CardState.REPLACED)
        .order_by(Card.issued_at.desc())
        .limit(1)
    )


def newest_card_no(app: AppContext, member_id: str) -> str | None:
    """The number of :func:`newest_card`."""
    with app.db.read() as session:
        card = newest_card(session, member_id)
        return card.card_no if card else None


def find_member_for_staff(app: AppContext, staff: StaffIdentity, phone: str) -> MemberView:
    """The member with ``phone`` as the desk sees them, with their newest card, audited."""
    require(staff, Permission.LOOKUP_MEMBER)
    ensure_here(app, phone=phone)
    with app.db.read() as session:
        member, _card = members.resolve_member(session, app, phone=phone)
        view = members.build_view(session, app, member, newest_card(session, member.id))
    record_lookup(app, staff.staff_id, view.member_id, "staff")
    return view
