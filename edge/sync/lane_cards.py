"""Cards this kiosk issued, replaced or blocked, told to the store's lanes straight away.

The lanes keep a card list (new cards accepted, lost and blocked ones refused at the till).
Cards changed at other stores reach them through the replica and HQ's blocklist; cards
changed here are read from this kiosk's own outbox, so a lane hears of a card lost at the
member desk even while the store's link to HQ is down.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

from edge.app import AppContext
from edge.services.tx import get_meta, set_meta
from edge.storage.models import Card, OutboxEvent

log = logging.getLogger(__name__)

LANE_CARDS_CURSOR = "lanes.cards_cursor"
CARD_EVENTS = ("member.registered", "card.replaced", "card.blocklist")
SCAN_ROWS = 2000


def _cards_in(kind: str, payload: str) -> list[str]:
    try:
        data = json.loads(payload)["data"]
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable %s event in the outbox", kind)
        return []
    if not isinstance(data, dict):
        return []
    if kind == "member.registered":
        found = [data.get("card_no")]
    elif kind == "card.replaced":
        found = [data.get("old_card_no"), data.get("new_card_no")]
    else:
        found = list(data.get("add") or []) + list(data.get("remove") or [])
    return [c for c in found if isinstance(c, str) and c]


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
            rows = session.execute(
                select(OutboxEvent.seq, OutboxEvent.kind, OutboxEvent.payload)
                .where(OutboxEvent.seq > self.cursor)
                .order_by(OutboxEvent.seq)
                .limit(SCAN_ROWS)
            ).all()
            if not rows:
                return [], self.cursor
            card_nos: list[str] = []
            for _, kind, payload in rows:
                if kind in CARD_EVENTS:
                    card_nos += [c for c in _cards_in(kind, payload) if c not in card_nos]
            cards = [
                (card.card_no, str(card.state))
                for card in session.scalars(select(Card).where(Card.card_no.in_(card_nos)))
            ]
        return sorted(cards), int(rows[-1][0])

    def advance(self, to_seq: int, told: bool) -> None:
        """Moves the cursor; it is written down only when cards were told (a restart reads
        again what held no card change, which costs a query, not a message)."""
        self.cursor = to_seq
        if told:
            with self.app.db.write() as session:
                set_meta(session, LANE_CARDS_CURSOR, str(to_seq))
