"""The member desk's jobs for staff at the kiosk: a lost card replaced in one go, the day's
figures, and the audit records of what only the devices did (a voucher reprinted, faults
cleared, a call for help).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.cards import CardState, parse_card_number
from edge.domain.day_report import DayFigures, tally_day
from edge.domain.points import local_date
from edge.domain.staff import Permission
from edge.services import cards, gifts
from edge.services.staff import StaffIdentity, require
from edge.services.status import audit_log
from edge.services.tx import transaction
from edge.storage.models import Card


def replace_lost_card(app: AppContext, card_no: str, staff: StaffIdentity) -> cards.CardChange:
    """Blocks the old card (reported lost first while it is still active, so every lane
    refuses it) and issues the new one carrying the balance."""
    require(staff, Permission.REPLACE_CARD)
    with app.db.read() as session:
        state = session.scalar(select(Card.state).where(Card.card_no == parse_card_number(card_no)))
    if state == CardState.ACTIVE:
        cards.report_lost_card(app, card_no, staff)
    return cards.replace_card(app, card_no, staff)


def daily_figures(app: AppContext, staff: StaffIdentity) -> DayFigures:
    """Today's figures (the store-local day so far) from the audit log, with the gifts low in
    stock now."""
    require(staff, Permission.DAILY_REPORT)
    today = local_date(app.clock(), app.tz)
    start = datetime.combine(today, datetime.min.time(), app.tz)
    records = ((line.action, line.detail) for line in audit_log(app, since=start, limit=100_000))
    low = ((g.name, g.stock) for g in gifts.list_gifts(app) if g.is_low)
    return tally_day(today, records, low)


def record_voucher_reprint(
    app: AppContext, staff: StaffIdentity, redemption_id: str, printed: bool
) -> None:
    with transaction(app) as tx:
        tx.audit(staff.staff_id, "gift.reprint_voucher", redemption_id, printed=printed)


def record_faults_cleared(app: AppContext, staff: StaffIdentity, states: Mapping[str, str]) -> None:
    """Audits a fault clearing with each device's state after it (device -> state)."""
    with transaction(app) as tx:
        tx.audit(staff.staff_id, "device.clear_fault", app.device_id, **states)


def record_help_request(app: AppContext) -> None:
    with transaction(app) as tx:
        tx.audit("member", "help.requested", app.device_id)
