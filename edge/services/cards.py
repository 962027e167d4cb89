"""Card use cases: issue from this device's range, report lost, replace (the balance follows)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.cards import (
    CardState,
    can_replace,
    can_report_lost,
    card_number,
    parse_card_number,
)
from edge.domain.errors import NotFound, Refusal
from edge.domain.staff import Permission
from edge.services.remote import ensure_here
from edge.services.staff import StaffIdentity, require
from edge.services.tx import Tx, transaction
from edge.storage.models import Card, CardRange, Member


def _allocate_serial(tx: Tx) -> int:
    """Takes the next serial of this device's range (inside the caller's write transaction)."""
    device = tx.app.config.device
    rng = tx.session.get(CardRange, device.device_id)
    if rng is None:
        rng = CardRange(
            device_id=device.device_id,
            range_start=device.card_range_start,
            range_end=device.card_range_end,
            next_serial=device.card_range_start,
        )
        tx.session.add(rng)
    elif (rng.range_start, rng.range_end) != (device.card_range_start, device.card_range_end):
        # A new range from provisioning: continue where the old one stopped if it overlaps.
        rng.range_start, rng.range_end = device.card_range_start, device.card_range_end
        rng.next_serial = max(rng.next_serial, rng.range_start)
    serial = rng.next_serial
    while serial <= rng.range_end and tx.session.get(Card, card_number(serial)) is not None:
        serial += 1  # a card of this range restored from a backup or synced back
    if serial > rng.range_end:
        raise Refusal(
            "this kiosk has issued every card number of its range; HQ must assign a new range",
            code="card_range_exhausted",
        )
    rng.next_serial = serial + 1
    return serial


def issue_card(tx: Tx, member: Member) -> Card:
    card = Card(
        card_no=card_number(_allocate_serial(tx)),
        member_id=member.id,
        state=CardState.ACTIVE,
        card_type=member.tier,
        issued_at=tx.now,
        state_changed_at=tx.now,
        replaced_by=None,
        device_id=tx.app.device_id,
    )
    tx.session.add(card)
    return card


@dataclass(frozen=True)
class CardChange:
    card_no: str
    state: str
    member_id: str
    new_card_no: str | None = None
    balance: int = 0
    phone_masked: str = ""


def _load(tx: Tx, card_no: str) -> tuple[Card, Member]:
    card = tx.session.get(Card, parse_card_number(card_no))
    if card is None:
        raise NotFound(f"no member card {card_no}", code="unknown_card", card_no=card_no)
    member = tx.session.get(Member, card.member_id)
    assert member is not None
    if member.deleted_at is not None:
        raise Refusal("this membership was closed", code="member_deleted")
    return card, member


def report_lost_card(app: AppContext, card_no: str, staff: StaffIdentity) -> CardChange:
    """Blocks a lost card at once, here and (through the blocklist event) at every lane."""
    require(staff, Permission.REPORT_LOST_CARD)
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        card, member = _load(tx, card_no)
        if not can_report_lost(card.state):
            raise Refusal(
                f"card {card.card_no} is {card.state}, not active",
                code="card_not_active",
                state=card.state,
            )
        card.state = CardState.LOST
        card.state_changed_at = tx.now
        tx.audit(staff.staff_id, "card.lost", card.card_no, member_id=member.id)
        tx.emit("card.blocklist", {"add": [card.card_no], "reason": "lost"})
        return CardChange(
            card.card_no, card.state, member.id, None, member.balance, member.phone_masked
        )


def replace_card(app: AppContext, card_no: str, staff: StaffIdentity) -> CardChange:
    """Issues a new card for a lost, blocked or damaged one; the old one is retired for good.

    Points belong to the member, not the card, so the whole balance is on the new card.
    """
    require(staff, Permission.REPLACE_CARD)
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        old, member = _load(tx, card_no)
        if not can_replace(old.state):
            raise Refusal(
                f"card {old.card_no} was already replaced by {old.replaced_by}",
                code="card_already_replaced",
                replaced_by=old.replaced_by,
            )
        # Any other active card of the member is retired too: one active card per member.
        for other in tx.session.scalars(
            select(Card).where(Card.member_id == member.id, Card.state == CardState.ACTIVE)
        ):
            other.state = CardState.REPLACED
            other.state_changed_at = tx.now
        new = issue_card(tx, member)
        old.state = CardState.REPLACED
        old.state_changed_at = tx.now
        old.replaced_by = new.card_no
        tx.audit(
            staff.staff_id,
            "card.replace",
            old.card_no,
            new_card_no=new.card_no,
            member_id=member.id,
            balance=member.balance,
        )
        tx.emit(
            "card.replaced",
            {
                "member_id": member.id,
                "old_card_no": old.card_no,
                "new_card_no": new.card_no,
                "card_type": new.card_type,
            },
        )
        tx.emit("card.blocklist", {"add": [old.card_no], "reason": "replaced"})
        return CardChange(
            old.card_no, old.state, member.id, new.card_no, member.balance, member.phone_masked
        )


@dataclass(frozen=True)
class CardBlock:
    """What blocking a card did: ``known`` False for a card this kiosk has never heard of."""

    card_no: str
    known: bool
    before: str = ""
    state: str = ""


def block_card(app: AppContext, card_no: str, actor: str = "hq") -> CardBlock:
    """Blocks an active card here and tells HQ (a ``card.blocklist`` event for every lane);
    a card in any other state is left as it is."""
    number = parse_card_number(card_no)
    with transaction(app) as tx:
        card = tx.session.get(Card, number)
        if card is None:
            return CardBlock(number, known=False)
        before = str(card.state)
        if card.state == CardState.ACTIVE:
            card.state = CardState.BLOCKED
            card.state_changed_at = tx.now
            tx.audit(actor, "card.block", number, before=before)
            tx.emit("card.blocklist", {"add": [number], "reason": actor})
        return CardBlock(number, True, before, str(card.state))


def card_states(app: AppContext, card_nos: set[str]) -> list[tuple[str, str]]:
    """The state of each of these cards this kiosk knows (for the store's lanes' card
    list), sorted by card number; cards it does not know are left out."""
    if not card_nos:
        return []
    with app.db.read() as session:
        rows = session.execute(
            select(Card.card_no, Card.state).where(Card.card_no.in_(card_nos))
        ).all()
    return sorted((card_no, str(state)) for card_no, state in rows)


@dataclass(frozen=True)
class LaneCardFacts:
    """What the store's lanes keep about a card: its state, and its member's tier with the
    tier's member price (percent off) in the rules in force."""

    card_no: str
    state: str
    tier: str | None
    member_price_pct: int


def lane_card_facts(app: AppContext, cards: list[tuple[str, str]]) -> list[LaneCardFacts]:
    """``cards`` (number, state) with their members' tiers and member prices, in order."""
    if not cards:
        return []
    prices = {t.code: t.member_price_pct for t in app.ladder}
    tiers: dict[str, str] = {}
    numbers = [c for c, _ in cards]
    with app.db.read() as session:
        for start in range(0, len(numbers), 500):
            tiers.update(
                session.execute(
                    select(Card.card_no, Member.tier)
                    .join(Member, Member.id == Card.member_id)
                    .where(Card.card_no.in_(numbers[start : start + 500]))
                )
                .tuples()
                .all()
            )
    return [
        LaneCardFacts(c, state, tiers.get(c), prices.get(tiers.get(c, ""), 0)) for c, state in cards
    ]


def member_cards(app: AppContext, member_ids: set[str]) -> list[tuple[str, str]]:
    """The cards of these members that lanes sell to now (active), with their state."""
    if not member_ids:
        return []
    with app.db.read() as session:
        rows = session.execute(
            select(Card.card_no, Card.state).where(
                Card.member_id.in_(sorted(member_ids)), Card.state == CardState.ACTIVE
            )
        ).all()
    return sorted((c, str(state)) for c, state in rows)


def active_cards(app: AppContext, after: str = "", limit: int = 500) -> list[tuple[str, str]]:
    """Active cards by number after ``after``, ``limit`` at a time (to tell every lane)."""
    with app.db.read() as session:
        rows = session.execute(
            select(Card.card_no, Card.state)
            .where(Card.state == CardState.ACTIVE, Card.card_no > after)
            .order_by(Card.card_no)
            .limit(limit)
        ).all()
    return [(c, str(state)) for c, state in rows]
