"""The local replica of other stores' members, cards and ledger entries, fed by HQ.

HQ numbers every event it stores (``hq_seq``) and sends each device the events of the others
in order. The device keeps a cursor: a batch that starts where the cursor is gets applied and
moves it, a batch from the past is ignored, a batch from the future means something was lost
on the way and the device asks HQ to send again from its cursor. Each event is applied by id
(members, cards, lots and entries keep the ids their device gave them), so the replica's
``kiosk ledger verify`` holds: balance = sum of entries, a lot's remaining = its entries' net.

A debit whose lot this store already spent (the same points redeemed at two offline stores)
is kept whole: it moves to another open lot of the member that can absorb it, or stays
without a lot; the balance goes negative and the member is flagged for staff.

No event stops the replica. One that names a member not here yet (its registration is still
on the way) is kept in ``sync_set_aside`` and applied, in HQ's order, as soon as the member
arrives. One that fails its schema or does not apply is applied in none of its parts (a
savepoint), kept there for a technician and reported to HQ as an ``alert.device``
(``replica_set_aside``); the events after it go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from edge.app import AppContext
from edge.domain.cards import CardState
from edge.domain.merges import MERGE_KINDS
from edge.domain.tiers import months_after
from edge.protocol import (
    AdjustmentData,
    EntriesData,
    Event,
    Feed,
    LedgerEntryData,
    MemberRegisteredData,
    MemberSnapshot,
    ProtocolError,
    ReplicaBatch,
    ReplicaEvent,
)
from edge.protocol.messages import (
    CardBlocklistData,
    CardReplacedData,
    GiftRedeemedData,
    MemberDeletedData,
    MemberMessageConsentData,
    MemberUpdatedData,
    TierChangedData,
)
from edge.services.connectivity import record_hq_contact
from edge.services.personal import erase_personal, set_personal
from edge.services.tx import Tx, get_meta, set_meta, transaction
from edge.storage.models import (
    BonusClaim,
    Card,
    ChainRedemption,
    LedgerEntry,
    Member,
    PointsLot,
    Purchase,
    Redemption,
)
from edge.storage.sync_models import SetAside

log = logging.getLogger(__name__)

REPLICA_CURSOR = "replica_cursor"  # in the chain's numbering (protocol 1.0)
STORE_FEED_CURSOR = "store_feed_cursor"  # in the store's feed


def cursor_key(feed: Feed) -> str:
    return STORE_FEED_CURSOR if feed == "store" else REPLICA_CURSOR


@dataclass
class ReplicaOutcome:
    """What a batch did: ``gap`` means ask HQ to resend from ``cursor``."""

    applied: int = 0
    skipped: int = 0
    waiting: int = 0
    set_aside: int = 0
    released: int = 0
    stale: bool = False
    gap: bool = False
    cursor: int = 0
    flagged: list[str] = field(default_factory=list)
    cards: list[tuple[str, str]] = field(default_factory=list)


def replica_cursor(tx: Tx, feed: Feed = "store") -> int:
    return int(get_meta(tx.session, cursor_key(feed)) or 0)


def apply_replica_batch(app: AppContext, batch: ReplicaBatch) -> ReplicaOutcome:
    """Applies ``batch`` in one transaction if it continues the cursor (see module doc).

    No event can make this fail: one whose member is not here yet waits for it, one that
    does not apply is set aside (see :func:`_apply_one`), and the cursor moves on.
    """
    with transaction(app) as tx:
        cursor = replica_cursor(tx, batch.feed)
        outcome = ReplicaOutcome(cursor=cursor)
        if batch.to_seq <= cursor:
            outcome.stale = True
            return outcome
        if batch.after_seq > cursor:
            outcome.gap = True
            return outcome
        touched: set[str] = set()
        for item in batch.events:
            if item.hq_seq <= cursor:
                continue
            if item.member is not None:
                apply_snapshot(tx, item.member, touched, outcome)
                continue
            assert item.event is not None
            if item.event.device_id == app.device_id:
                continue  # our own event coming back: already applied here
            _apply_one(tx, item, touched, outcome)
        _settle(tx, touched, outcome)
        set_meta(tx.session, cursor_key(batch.feed), str(batch.to_seq))
        record_hq_contact(tx.session, tx.now)
        outcome.cursor = batch.to_seq
        if outcome.applied or outcome.waiting or outcome.set_aside:
            tx.audit(
                "hq",
                "sync.replica",
                "",
                feed=batch.feed,
                after_seq=batch.after_seq,
                to_seq=batch.to_seq,
                applied=outcome.applied,
                waiting=outcome.waiting,
                set_aside=outcome.set_aside,
            )
        return outcome


def _settle(tx: Tx, touched: set[str], outcome: ReplicaOutcome) -> None:
    """Applies what waited for the members now here, and flags those driven negative."""
    _release_waiting(tx, touched, outcome)
    for member_id in touched:
        member = tx.session.get(Member, member_id)
        if member is not None and member.balance < 0 and not member.overdraft_flagged:
            member.overdraft_flagged = True
            outcome.flagged.append(member_id)
            tx.audit("hq", "member.overdraft_flagged", member_id, balance=member.balance)


def apply_fetched_member(app: AppContext, snap: MemberSnapshot) -> ReplicaOutcome:
    """A member HQ sent on request (see :func:`apply_snapshot`), in one transaction."""
    with transaction(app) as tx:
        outcome = ReplicaOutcome(cursor=replica_cursor(tx))
        touched: set[str] = set()
        apply_snapshot(tx, snap, touched, outcome)
        member = tx.session.get(Member, snap.member_id)
        if member is not None and outcome.applied:
            member.held_at = tx.now  # held here from now on (edge.services.remote)
        _settle(tx, touched, outcome)
        record_hq_contact(tx.session, tx.now)
        tx.audit("hq", "sync.member_fetched", snap.member_id, entries=len(snap.entries))
        return outcome


def apply_snapshot(
    tx: Tx, snap: MemberSnapshot, touched: set[str], outcome: ReplicaOutcome
) -> None:
    """A member as HQ holds them: made here if new, their cards and entries added by id.

    Idempotent, and all of it or none of it (a savepoint): a snapshot that cannot apply is
    kept aside for a technician with an ``alert.device``, like an event.
    """
    cards, before = len(outcome.cards), set(touched)
    try:
        with tx.session.begin_nested():
            _apply_snapshot(tx, snap, touched, outcome)
    except (ProtocolError, SQLAlchemyError) as exc:
        del outcome.cards[cards:]
        touched.intersection_update(before)
        reason = f"member {snap.member_id} from HQ: {str(exc).splitlines()[0]}"
        outcome.set_aside += 1
        log.error("replica snapshot set aside: %s", reason)
        tx.audit("hq", "sync.replica_set_aside", snap.member_id, reason=reason[:256])
        tx.emit("alert.device", {"code": "replica_set_aside", "detail": reason[:256]})
        return
    outcome.applied += 1


def _apply_snapshot(
    tx: Tx, snap: MemberSnapshot, touched: set[str], outcome: ReplicaOutcome
) -> None:
    member = tx.session.get(Member, snap.member_id)
    if member is None:
        member = _new_member(
            tx,
            snap.member_id,
            snap.phone_hash,
            snap.phone_masked,
            snap.consent_version,
            snap.tier,
            snap.store_id,
            snap.created_at,
            name=snap.name,
            birthday=snap.birthday,
        )
        tx.session.add(member)
        tx.session.flush()
        touched.add(member.id)
    if snap.merged_into is not None and member.merged_into is None:
        member.merged_into = snap.merged_into
    for absorbed_id in snap.merged_from:
        absorbed = tx.session.get(Member, absorbed_id)
        if absorbed is not None:
            absorbed.merged_into = member.id
            _absorb_here(tx, absorbed, member, outcome)
    for card in snap.cards:
        here = tx.session.get(Card, card.card_no)
        if here is None:
            tx.session.add(
                Card(
                    card_no=card.card_no,
                    member_id=member.id,
                    state=card.state,
                    card_type=card.card_type,
                    issued_at=snap.created_at,
                    state_changed_at=snap.created_at,
                    replaced_by=card.replaced_by,
                    device_id="hq",
                )
            )
            outcome.cards.append((card.card_no, card.state))
        elif here.member_id != member.id:
            raise ProtocolError(f"card {card.card_no} belongs to another member here")
        elif here.state == CardState.ACTIVE and card.state != "active":
            here.state = card.state
            here.state_changed_at = tx.now
            outcome.cards.append((card.card_no, card.state))
    tx.session.flush()
    for entry in snap.entries:
        if entry.member_id != member.id:
            raise ProtocolError(f"entry {entry.id} of another member in {member.id}'s snapshot")
        if _apply_entry(tx, entry):
            touched.add(member.id)
    for r in snap.redemptions:
        _ensure_redemption(tx, r.redemption_id, member.id, r.sku, r.qty, "hq", tx.now)
    if member.merged_into is not None:
        kept = tx.session.get(Member, member.merged_into)
        if kept is not None:
            _absorb_here(tx, member, kept, outcome)
            touched.add(kept.id)
    if snap.deleted and member.deleted_at is None:
        erase_personal(tx.session, member)
        member.deleted_at = tx.now
        for held in tx.session.scalars(select(Card).where(Card.member_id == member.id)):
            if held.state in (CardState.ACTIVE, CardState.LOST):
                held.state = CardState.BLOCKED
                held.state_changed_at = tx.now
                outcome.cards.append((held.card_no, CardState.BLOCKED))


def _absorb_here(tx: Tx, absorbed: Member, kept: Member, outcome: ReplicaOutcome) -> None:
    """A member merged at HQ (edge.domain.merges): their cards and lots become the kept
    member's here. Idempotent; the balance moves by the merge's entries, not here.

    The cards keep their state (HQ's snapshot of the kept member says which are blocked),
    and each lot keeps its entries, so a lot's remaining is still its entries' net. The
    lanes hear of each card moved: it carries the kept member now.
    """
    for card in tx.session.scalars(select(Card).where(Card.member_id == absorbed.id)):
        card.member_id = kept.id
        outcome.cards.append((card.card_no, card.state))
    for lot in tx.session.scalars(select(PointsLot).where(PointsLot.member_id == absorbed.id)):
        lot.member_id = kept.id
    if absorbed.overdraft_flagged and absorbed.balance >= 0:
        absorbed.overdraft_flagged = False  # the debt went with the points
    tx.session.flush()


def _members_needed(data: object) -> set[str]:
    """The members an event's data changes: they must be here before it can apply."""
    if isinstance(data, MemberRegisteredData):
        return {e.member_id for e in data.entries} - {data.member_id}
    if isinstance(data, EntriesData):
        return {data.member_id} | {e.member_id for e in data.entries}
    if isinstance(
        data, MemberUpdatedData | MemberDeletedData | TierChangedData | MemberMessageConsentData
    ):
        return {data.member_id}
    if isinstance(data, CardReplacedData):
        return {data.member_id}
    return set()


def _apply_one(tx: Tx, item: ReplicaEvent, touched: set[str], outcome: ReplicaOutcome) -> None:
    """Applies one event in a savepoint, or keeps it aside: all of it or none of it.

    An event of a member not here yet (its registration is still on the way, or waits
    itself) is kept until the member arrives. An event that fails its schema or does not
    apply is kept for a technician, with an ``alert.device`` to HQ; the rest go on.
    """
    event = item.event
    assert event is not None  # a member's snapshot is applied by apply_snapshot
    try:
        data = event.typed_data
    except ProtocolError as exc:
        _set_aside(tx, item, None, str(exc), outcome)
        return
    missing = sorted(m for m in _members_needed(data) if tx.session.get(Member, m) is None)
    if missing:
        _set_aside(tx, item, missing[0], f"waiting for member {missing[0]}", outcome)
        return
    cards, before = len(outcome.cards), set(touched)
    try:
        with tx.session.begin_nested():
            applied = _apply_event(tx, event, data, touched, outcome)
    except (ProtocolError, SQLAlchemyError) as exc:
        del outcome.cards[cards:]
        touched.intersection_update(before)
        _set_aside(tx, item, None, str(exc).splitlines()[0], outcome)
        return
    if applied:
        outcome.applied += 1
    else:
        outcome.skipped += 1


def _set_aside(
    tx: Tx, item: ReplicaEvent, member_id: str | None, reason: str, outcome: ReplicaOutcome
) -> None:
    event = item.event
    assert event is not None
    key = f"replica:{event.event_id}"
    kept = tx.session.get(SetAside, key)
    if kept is None:
        kept = SetAside(
            key=key,
            topic="replica",
            hq_seq=item.hq_seq,
            payload=item.model_dump_json(),
            attempts=0,
            set_aside_at=tx.now,
        )
        tx.session.add(kept)
    kept.waiting_for = member_id
    kept.reason = reason[:256]
    kept.attempts += 1
    if member_id is not None:
        outcome.waiting += 1
        log.info("replica event %s waits for member %s", event.event_id, member_id)
        return
    outcome.set_aside += 1
    log.error("replica event %s set aside: %s", event.event_id, reason)
    tx.audit("hq", "sync.replica_set_aside", event.event_id, reason=reason[:256])
    tx.emit(
        "alert.device",
        {
            "code": "replica_set_aside",
            "detail": f"event {event.event_id} ({event.kind}) of {event.device_id}: {reason}"[:256],
        },
    )


def _release_waiting(tx: Tx, touched: set[str], outcome: ReplicaOutcome) -> None:
    """Applies, in HQ's order, the events whose member has arrived (by now, or in this batch)."""
    while True:
        ready = list(
            tx.session.scalars(
                select(SetAside)
                .where(SetAside.waiting_for.in_(select(Member.id)))
                .order_by(SetAside.hq_seq, SetAside.key)
            )
        )
        if not ready:
            return
        for kept in ready:
            item = ReplicaEvent.model_validate_json(kept.payload)
            tx.session.delete(kept)
            tx.session.flush()
            outcome.released += 1
            _apply_one(tx, item, touched, outcome)


def waiting_events(tx: Tx) -> int:
    """How many replica events wait for their member or are set aside here."""
    return int(
        tx.session.scalar(
            select(func.count()).select_from(SetAside).where(SetAside.key.like("replica:%"))
        )
        or 0
    )


def _apply_event(
    tx: Tx, event: Event, data: object, touched: set[str], outcome: ReplicaOutcome
) -> bool:
    if data is None:
        return False  # gift stock, coupons, audit-only kinds are each store's own
    if isinstance(data, MemberRegisteredData):
        _ensure_member(tx, event, data)
        _ensure_card(tx, data.card_no, data.member_id, data.card_type, event)
        outcome.cards.append((data.card_no, CardState.ACTIVE))
    if isinstance(data, EntriesData):
        if event.kind == "points.accrued":
            _ensure_purchase(tx, event, data)
        elif event.kind in ("points.birthday", "points.checkin"):
            _ensure_claim(tx, data)
        if isinstance(data, GiftRedeemedData) and data.redemption_id and data.sku and data.qty:
            _ensure_redemption(
                tx,
                data.redemption_id,
                data.member_id,
                data.sku,
                data.qty,
                event.device_id,
                event.at,
            )
        for entry in data.entries:
            if _apply_entry(tx, entry):
                touched.add(entry.member_id)
        if isinstance(data, AdjustmentData):
            _clear_settled(tx, data.member_id)
        return True
    if isinstance(data, MemberUpdatedData):
        member = tx.session.get(Member, data.member_id)
        if member is None:
            raise ProtocolError(f"member {data.member_id} unknown here")
        member.phone_hash = _free_phone_hash(tx, data.phone_hash, member.id)
        member.phone_masked = data.phone_masked
        member.updated_at = event.at
        return True
    if isinstance(data, MemberMessageConsentData):
        member = tx.session.get(Member, data.member_id)
        if member is None:
            raise ProtocolError(f"member {data.member_id} unknown here")
        member.message_consent_version, member.message_consent_at = data.version, event.at
        member.updated_at = event.at
        return True
    if isinstance(data, MemberDeletedData):
        member = tx.session.get(Member, data.member_id)
        if member is None:
            raise ProtocolError(f"member {data.member_id} unknown here")
        erase_personal(tx.session, member)
        member.deleted_at = member.deleted_at or event.at
        member.updated_at = event.at
        for card in tx.session.scalars(select(Card).where(Card.member_id == member.id)):
            if card.state in (CardState.ACTIVE, CardState.LOST):
                card.state = CardState.BLOCKED
                card.state_changed_at = event.at
                outcome.cards.append((card.card_no, CardState.BLOCKED))
        return True
    if isinstance(data, TierChangedData):
        member = tx.session.get(Member, data.member_id)
        if member is None:
            raise ProtocolError(f"member {data.member_id} unknown here")
        member.tier = data.after
        # the member's cards carry another member price at the lanes now
        outcome.cards.extend(
            (c, CardState.ACTIVE)
            for c in tx.session.scalars(
                select(Card.card_no).where(
                    Card.member_id == member.id, Card.state == CardState.ACTIVE
                )
            )
        )
        return True
    if isinstance(data, CardReplacedData):
        old = tx.session.get(Card, data.old_card_no)
        if old is not None:
            old.state = CardState.REPLACED
            old.replaced_by = data.new_card_no
            old.state_changed_at = event.at
        _ensure_card(tx, data.new_card_no, data.member_id, data.card_type, event)
        outcome.cards += [
            (data.old_card_no, CardState.REPLACED),
            (data.new_card_no, CardState.ACTIVE),
        ]
        return True
    if isinstance(data, CardBlocklistData):
        state = CardState.LOST if data.reason == "lost" else CardState.BLOCKED
        for card_no in data.add:
            blocked = tx.session.get(Card, card_no)
            if blocked is not None and blocked.state == CardState.ACTIVE:
                blocked.state = state
                blocked.state_changed_at = event.at
                outcome.cards.append((card_no, state))
        return True
    return False


def _free_phone_hash(tx: Tx, phone_hash: str | None, member_id: str) -> str | None:
    """The hash, unless another member here holds it (one phone registered at two offline
    stores): then lookup by phone stays with the local member and staff sort it out."""
    if phone_hash is None:
        return None
    holder = tx.session.scalar(select(Member.id).where(Member.phone_hash == phone_hash))
    if holder is not None and holder != member_id:
        log.warning("phone of member %s is registered to %s here too", member_id, holder)
        return None
    return phone_hash


def _ensure_member(tx: Tx, event: Event, data: MemberRegisteredData) -> None:
    if tx.session.get(Member, data.member_id) is not None:
        return
    tx.session.add(
        _new_member(
            tx,
            data.member_id,
            data.phone_hash,
            data.phone_masked,
            data.consent_version,
            data.tier,
            event.store_id,
            event.at,
            data.name,
            data.birthday,
        )
    )
    if data.message_consent_version is not None:  # the sealed phone never comes this way
        added = tx.session.get(Member, data.member_id)
        assert added is not None
        added.message_consent_version, added.message_consent_at = (
            data.message_consent_version,
            event.at,
        )
    tx.session.flush()


def _new_member(
    tx: Tx,
    member_id: str,
    phone_hash: str | None,
    phone_masked: str,
    consent_version: str,
    tier: str,
    store_id: str,
    at: datetime,
    name: str | None = None,
    birthday: date | None = None,
) -> Member:
    """A member of another device, as the replica keeps them (no sealed phone, no referrer;
    the name and birthday encrypted with this device's data key, for the perks here)."""
    member = Member(
        id=member_id,
        phone_hash=_free_phone_hash(tx, phone_hash, member_id),
        phone_cipher=None,
        phone_masked=phone_masked,
        referrer_id=None,
        consent_version=consent_version,
        consented_at=at,
        tier=tier,
        tier_review_at=months_after(at, tx.app.config.tiers.period_months),
        balance=0,
        overdraft_flagged=False,
        store_id=store_id,
        created_at=at,
        updated_at=at,
    )
    set_personal(tx.app, member, name, birthday)
    return member


def _ensure_card(tx: Tx, card_no: str, member_id: str, card_type: str, event: Event) -> None:
    if tx.session.get(Card, card_no) is not None:
        return
    if tx.session.get(Member, member_id) is None:
        raise ProtocolError(f"card {card_no} of unknown member {member_id}")
    tx.session.add(
        Card(
            card_no=card_no,
            member_id=member_id,
            state=CardState.ACTIVE,
            card_type=card_type,
            issued_at=event.at,
            state_changed_at=event.at,
            replaced_by=None,
            device_id=event.device_id,
        )
    )
    tx.session.flush()


def _ensure_purchase(tx: Tx, event: Event, data: EntriesData) -> None:
    receipt = data.model_extra.get("receipt_id") if data.model_extra else None
    amount = data.model_extra.get("amount_cents") if data.model_extra else None
    if not isinstance(receipt, str) or not isinstance(amount, int) or amount <= 0:
        return
    if data.card_no is None or tx.session.get(Purchase, receipt) is not None:
        return
    points = sum(e.points for e in data.entries)
    tx.session.add(
        Purchase(
            receipt_id=receipt[:64],
            member_id=data.member_id,
            card_no=data.card_no,
            amount_cents=amount,
            points=points,
            at=event.at,
            store_id=event.store_id,
        )
    )


def _ensure_claim(tx: Tx, data: EntriesData) -> None:
    """A birthday gift or check-in claimed at another store counts here too: once a year
    (a day) wherever it was claimed. The period is in the entries' ref (``birthday:2026``)."""
    for entry in data.entries:
        kind, _, period = entry.ref.partition(":")
        if kind not in ("birthday", "checkin") or not period:
            continue
        if tx.session.get(Member, entry.member_id) is None:
            continue
        claimed = tx.session.scalar(
            select(BonusClaim.id).where(
                BonusClaim.member_id == entry.member_id,
                BonusClaim.kind == kind,
                BonusClaim.period == period,
            )
        )
        if claimed is None:
            tx.session.add(
                BonusClaim(
                    id=tx.new_id(),
                    member_id=entry.member_id,
                    kind=kind,
                    period=period,
                    at=entry.at,
                )
            )


def _ensure_redemption(
    tx: Tx, redemption_id: str, member_id: str, sku: str, qty: int, device_id: str, at: datetime
) -> None:
    """A redemption another device made counts here against the gift's per-member limit,
    once by its id (the event and the member's snapshot may both bring it); one made here
    is in ``redemption`` already."""
    if tx.session.get(ChainRedemption, redemption_id) is not None:
        return
    if tx.session.get(Redemption, redemption_id) is not None:
        return
    tx.session.add(
        ChainRedemption(
            id=redemption_id, member_id=member_id, sku=sku, qty=qty, device_id=device_id, at=at
        )
    )
    tx.session.flush()


def _clear_settled(tx: Tx, member_id: str) -> None:
    """An adjustment that brought a flagged member back to zero or above settled the
    overdraft (as at the store that made it)."""
    member = tx.session.get(Member, member_id)
    if member is not None and member.overdraft_flagged and member.balance >= 0:
        member.overdraft_flagged = False
        tx.audit("hq", "member.overdraft_cleared", member_id, balance=member.balance)


def _apply_entry(tx: Tx, entry: LedgerEntryData) -> bool:
    """Inserts one entry (and its lot, for a credit) unless it is already here."""
    if tx.session.get(LedgerEntry, entry.id) is not None:
        return False
    member = tx.session.get(Member, entry.member_id)
    if member is None:
        raise ProtocolError(f"entry {entry.id} of unknown member {entry.member_id}")
    lot_id = entry.lot_id
    if entry.kind in MERGE_KINDS:
        lot_id = None  # a merge moves the lots whole (see _absorb_here), never from one
    elif entry.points > 0:
        if lot_id is not None and tx.session.get(PointsLot, lot_id) is None:
            if entry.expires_at is None or entry.available_at is None:
                raise ProtocolError(f"credit {entry.id} without its lot's dates")
            tx.session.add(
                PointsLot(
                    id=lot_id,
                    member_id=member.id,
                    points=entry.points,
                    remaining=entry.points,
                    earned_at=entry.at,
                    available_at=entry.available_at,
                    expires_at=entry.expires_at,
                )
            )
            tx.session.flush()
        elif lot_id is not None:
            lot_id = None  # a second credit to one lot would break the lot's invariant
    else:
        lot_id = _absorbing_lot(tx, member.id, lot_id, -entry.points)
    tx.session.add(
        LedgerEntry(
            id=entry.id,
            member_id=member.id,
            kind=entry.kind,
            points=entry.points,
            lot_id=lot_id,
            ref=entry.ref,
            store_id=entry.store_id,
            device_id=entry.device_id,
            created_at=entry.at,
            note=entry.note or None,
        )
    )
    member.balance += entry.points
    member.updated_at = max(member.updated_at, entry.at)
    return True


def _absorbing_lot(tx: Tx, member_id: str, lot_id: str | None, take: int) -> str | None:
    """The lot a debit of ``take`` points is booked against here (its own if it can)."""
    if lot_id is not None:
        lot = tx.session.get(PointsLot, lot_id)
        if lot is not None and lot.member_id == member_id and lot.remaining >= take:
            lot.remaining -= take
            return lot_id
    other = tx.session.scalars(
        select(PointsLot)
        .where(PointsLot.member_id == member_id, PointsLot.remaining >= take)
        .order_by(PointsLot.expires_at, PointsLot.earned_at, PointsLot.id)
        .limit(1)
    ).first()
    if other is not None:
        other.remaining -= take
        return other.id
    return None
