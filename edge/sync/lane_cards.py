"""Cards this kiosk issued, replaced or blocked, and members whose tier changed here, told to
the store's lanes straight away.

The lanes keep a card list (new cards accepted, lost and blocked ones refused at the till).
Cards changed at other stores reach them through the replica and HQ's blocklist; cards
changed here are read from this kiosk's own outbox, so a lane hears of a card lost at the
member desk even while the store's link to HQ is down.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from sqlalchemy import func, select

from edge.app import AppContext
from edge.protocol import EVENT_DATA
from edge.protocol.messages import (
    CardBlocklistData,
    CardReplacedData,
    MemberRegisteredData,
    TierChangedData,
)
from edge.services.cards import card_states, member_cards
from edge.services.tx import get_meta, set_meta
from edge.storage.models import OutboxEvent

log = logging.getLogger(__name__)

LANE_CARDS_CURSOR = "lanes.cards_cursor"
CARD_EVENTS = ("member.registered", "card.replaced", "card.blocklist", "member.tier_changed")
SCAN_ROWS = 2000


def _cards_in(kind: str, payload: str) -> tuple[list[str], str | None]:
    """The card numbers a card event names and, for a tier change, the member whose cards
    now carry another member price; read through the protocol's own schema."""
    try:
        data = EVENT_DATA[kind].model_validate(json.loads(payload)["data"])
    except (ValueError, KeyError, TypeError, ValidationError):
        log.warning("unreadable %s event in the outbox", kind)
        return [], None
    if isinstance(data, MemberRegisteredData):
        return [data.card_no], None
    if isinstance(data, CardReplacedData):
        return [data.old_card_no, data.new_card_no], None
    if isinstance(data, CardBlocklistData):
        return list(data.add), None
    if isinstance(data, TierChangedData):
        return [], data.member_id
    return [], None


class LocalCardChanges:
    """Reads the outbox after a cursor for events that changed a card; the cursor is kept
    in the database once what it covers has been told to the lanes."""

    def __init__(self, app: AppContext) -> None:
        self.app = app
        with app.db.read() as session:
            self.cursor = int(get_meta(session, LANE_CARDS_CURSOR) or 0)

    def pending(self) -> tuple[list[tuple[str, str]], int]:
        """The cards changed after the cursor with their state now, and how far that reads."""
        with self.app.db.read() as session:
            upto = session.scalar(
                select(func.max(OutboxEvent.seq)).where(OutboxEvent.seq <= self.cursor + SCAN_ROWS)
            )
            if upto is None or upto <= self.cursor:
                return [], self.cursor
            rows = session.execute(
                select(OutboxEvent.kind, OutboxEvent.payload).where(
                    OutboxEvent.seq > self.cursor,
                    OutboxEvent.seq <= upto,
                    OutboxEvent.kind.in_(CARD_EVENTS),
                )
            ).all()
        card_nos: set[str] = set()
        members: set[str] = set()
        for kind, payload in rows:
            cards, member_id = _cards_in(kind, payload)
            card_nos.update(cards)
            if member_id is not None:
                members.add(member_id)
        told = dict(card_states(self.app, card_nos))
        told.update(member_cards(self.app, members))
        return sorted(told.items()), int(upto)

    def advance(self, to_seq: int, told: bool) -> None:
        """Moves the cursor; it is written down only when cards were told (a restart reads
        again what held no card change: one indexed query, no payloads, no message)."""
        self.cursor = to_seq
        if told:
            with self.app.db.write() as session:
                set_meta(session, LANE_CARDS_CURSOR, str(to_seq))
