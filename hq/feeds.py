"""Replication scoped to the store: who holds a member, each store's feed, member snapshots.

A kiosk holds its own store's members, not the chain's. HQ keeps which stores hold each
member (:class:`~hq.models.MemberHolder`: the home store, every store where the member's
points moved, every store that fetched them) and one numbered feed per store
(:class:`~hq.models.FeedItem`): the stored events that name a member the store holds, and a
member's snapshot when the store comes to hold them (a fetch, an import). A kiosk follows
its store's feed with a cursor, as it followed the chain's, so its inbound traffic grows
with its own store's members, not with the chain.

Locks, on PostgreSQL: a writer locks the members an event names before it reads who holds
them, and a fetch locks the member before it adds its store, so an event stored while a
store fetches the member is either in the snapshot or in the store's feed (or both; both
are idempotent). Feed numbers are taken last in the transaction, store by store in one
order, like the chain's counter: items commit in number order with no gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, case, delete, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from edge.domain.merges import MERGE_KINDS
from edge.protocol import (
    EntriesData,
    Event,
    LedgerEntryData,
    MemberSnapshot,
    ProtocolError,
    ReplicaEvent,
    SnapshotCard,
    SnapshotRedemption,
    months_before,
)
from edge.protocol.messages import (
    MAX_SNAPSHOT_ENTRIES,
    CardBlocklistData,
    CardReplacedData,
    GiftRedeemedData,
    MemberDeletedData,
    MemberMessageConsentData,
    MemberUpdatedData,
    TierChangedData,
)
from edge.security.personal import TextVault
from hq.bulk import among, insert_rows, stored_time
from hq.models import (
    CentralCard,
    CentralEntry,
    CentralMember,
    FeedHead,
    FeedItem,
    MemberHolder,
    MemberMerge,
    StoredEvent,
)
from hq.personal import as_relayed, birthday_of, name_of

UNKNOWN_TIER = "unknown"  # a member HQ knows only from entries (registration on the way)
IMPORTED_CONSENT = "import"
FEED_CHUNK = 1000
FeedNumbered = tuple[int, int | None, str | None]  # (feed_seq, hq_seq, member_id)
FEED_CHUNK_ENTRIES = 20_000  # snapshots' entries in one batch, to keep it under 4 MB
RENEW_SEEN = timedelta(days=1)  # a holding's seen_at moves at most this often
RELEASE_GRACE = timedelta(days=30)


def members_named(data: object) -> set[str]:
    """The members an event's data is about (cards are resolved by :func:`cards_members`)."""
    if isinstance(data, EntriesData):  # a registration too
        return {data.member_id} | {e.member_id for e in data.entries}
    if isinstance(
        data, MemberUpdatedData | MemberDeletedData | TierChangedData | MemberMessageConsentData
    ):
        return {data.member_id}
    if isinstance(data, CardReplacedData):
        return {data.member_id}
    return set()


def cards_members(session: Session, card_nos: Iterable[str]) -> set[str]:
    listed = sorted(set(card_nos))
    found: set[str] = set()
    for start in range(0, len(listed), 900):
        chunk = listed[start : start + 900]
        found |= set(
            session.scalars(select(CentralCard.member_id).where(CentralCard.card_no.in_(chunk)))
        )
    return found


def event_members(session: Session, data: object) -> set[str]:
    named = members_named(data)
    if isinstance(data, CardBlocklistData):
        named |= cards_members(session, data.add)
    return named


def lock_members(session: Session, member_ids: Iterable[str]) -> set[str]:
    """Locks (on PostgreSQL) the members that exist, in id order; returns their ids."""
    listed = sorted(set(member_ids))
    found: set[str] = set()
    for start in range(0, len(listed), 900):
        chunk = listed[start : start + 900]
        conn = session.connection()
        found |= set(
            conn.execute(
                select(CentralMember.id)
                .where(among(conn, CentralMember.id, chunk))
                .order_by(CentralMember.id)
                .with_for_update()
            ).scalars()
        )
    return found


def hold(
    session: Session, pairs: Iterable[tuple[str, str]], now: datetime
) -> list[tuple[str, str]]:
    """Records that each store holds each member; returns the (member, store) pairs new."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    members = sorted({m for m, _ in wanted})
    have: set[tuple[str, str]] = set()
    for start in range(0, len(members), 900):
        chunk = members[start : start + 900]
        have |= set(
            session.execute(
                select(MemberHolder.member_id, MemberHolder.store_id).where(
                    MemberHolder.member_id.in_(chunk)
                )
            )
            .tuples()
            .all()
        )
    new = [p for p in wanted if p not in have]
    add_holders(session, new, now)
    touch_holders(session, [p for p in wanted if p in have], now)
    return new


def add_holders(session: Session, pairs: list[tuple[str, str]], now: datetime) -> None:
    """Records (member, store) pairs known not to be recorded yet."""
    if pairs:
        insert_rows(
            session.connection(),
            MemberHolder,
            [{"member_id": m, "store_id": s, "since": now, "seen_at": now} for m, s in pairs],
        )


def touch_holders(session: Session, pairs: list[tuple[str, str]], now: datetime) -> None:
    """Each store saw each member now: ``seen_at`` moves, if it is a day old or more (so a
    member's daily purchases cost one write a day, not one each)."""
    if not pairs:
        return
    conn = session.connection()
    table = cast(Table, MemberHolder.__table__)
    stale = now - RENEW_SEEN
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "UPDATE hq_member_store AS h SET seen_at = :now "
                "FROM unnest(CAST(:m AS varchar[]), CAST(:s AS varchar[])) AS p(m, s) "
                "WHERE h.member_id = p.m AND h.store_id = p.s AND h.seen_at < :stale"
            ),
            {
                "m": [m for m, _ in pairs],
                "s": [s for _, s in pairs],
                "now": stored_time(now),
                "stale": stored_time(stale),
            },
        )
        return
    for start in range(0, len(pairs), 400):
        conn.execute(
            update(table)
            .where(
                tuple_(table.c.member_id, table.c.store_id).in_(pairs[start : start + 400]),
                table.c.seen_at < stale,
            )
            .values(seen_at=now)
        )


def release_unseen(session: Session, now: datetime, months: int, limit: int = 10_000) -> int:
    """Stores stop holding the members of other stores they have not seen for ``months``
    (and a grace of ``RELEASE_GRACE`` more, for a kiosk that counts from a day later than
    HQ); returns how many holdings ended. A member's home store holds them for good.

    From then on HQ sends the store nothing more of the member; its kiosks, which stop
    trusting what they hold of such a member after ``months`` themselves
    (``sync.hold_months``), fetch the member again when they meet them.
    """
    cutoff = months_before(now, months) - RELEASE_GRACE
    holder = cast(Table, MemberHolder.__table__)
    member = cast(Table, CentralMember.__table__)
    conn = session.connection()
    pairs = (
        conn.execute(
            select(holder.c.member_id, holder.c.store_id)
            .join(member, member.c.id == holder.c.member_id)
            .where(holder.c.seen_at < cutoff, holder.c.store_id != member.c.store_id)
            .order_by(holder.c.seen_at)
            .limit(limit)
        )
        .tuples()
        .all()
    )
    for start in range(0, len(pairs), 400):
        chunk = pairs[start : start + 400]
        conn.execute(
            delete(holder).where(
                tuple_(holder.c.member_id, holder.c.store_id).in_(chunk),
                holder.c.seen_at < cutoff,  # not seen again meanwhile
            )
        )
    return len(pairs)


def holders(session: Session, member_ids: Iterable[str]) -> dict[str, set[str]]:
    """The stores that hold each member."""
    listed = sorted(set(member_ids))
    held: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(listed), 900):
        chunk = listed[start : start + 900]
        conn = session.connection()
        for member_id, store_id in conn.execute(
            select(MemberHolder.member_id, MemberHolder.store_id).where(
                among(conn, MemberHolder.member_id, chunk)
            )
        ).tuples():
            held[member_id].add(store_id)
    return held


def take_feed_numbers(session: Session, counts: Mapping[str, int]) -> dict[str, int]:
    """``counts[store]`` consecutive numbers of each store's feed; returns the first of each.

    One statement for every store of a batch. The heads' rows stay locked until the
    transaction ends (see :func:`hq.ledger.take_numbers`). A store's first item makes its
    head; two writers making it at once collide on its key and the loser runs again
    (:func:`hq.service.lost_race`).
    """
    stores = sorted(counts)
    conn = session.connection()  # Core statements: no ORM bookkeeping on the hot path
    have = set(
        conn.execute(select(FeedHead.store_id).where(FeedHead.store_id.in_(stores))).scalars()
    )
    missing = [s for s in stores if s not in have]
    if missing:
        conn.execute(insert(FeedHead), [{"store_id": s, "last_seq": 0} for s in missing])
    moved = conn.execute(
        update(FeedHead)
        .where(FeedHead.store_id.in_(stores))
        .values(last_seq=FeedHead.last_seq + case(dict(counts), value=FeedHead.store_id))
        .returning(FeedHead.store_id, FeedHead.last_seq)
    ).tuples()
    return {store: int(last) - counts[store] + 1 for store, last in moved}


def append(
    session: Session, items: Mapping[str, list[tuple[int | None, str | None]]]
) -> dict[str, list[FeedNumbered]]:
    """Numbers and stores feed items: ``{store: [(hq_seq, member_id)]}`` becomes
    ``{store: [(feed_seq, hq_seq, member_id)]}``."""
    wanted = {store: len(listed) for store, listed in items.items() if listed}
    if not wanted:
        return {}
    firsts = take_feed_numbers(session, wanted)
    numbered: dict[str, list[FeedNumbered]] = {}
    rows: list[dict[str, object]] = []
    for store_id in sorted(wanted):
        first = firsts[store_id]
        numbered[store_id] = [
            (first + i, hq_seq, member_id) for i, (hq_seq, member_id) in enumerate(items[store_id])
        ]
        rows += [
            {"store_id": store_id, "feed_seq": n, "hq_seq": h, "member_id": m}
            for n, h, m in numbered[store_id]
        ]
    insert_rows(session.connection(), FeedItem, rows)
    return numbered


def feed_head(session: Session, store_id: str) -> int:
    return int(session.scalar(select(FeedHead.last_seq).where(FeedHead.store_id == store_id)) or 0)


def add_members_to_stores(
    session: Session, homes: Mapping[str, list[str]], now: datetime
) -> dict[str, list[FeedNumbered]]:
    """New members (an import) held by their home stores, each a snapshot in that feed."""
    new = hold(session, ((m, s) for s, ms in homes.items() for m in ms), now)
    items: dict[str, list[tuple[int | None, str | None]]] = defaultdict(list)
    for member_id, store_id in new:
        items[store_id].append((None, member_id))
    return append(session, items)


def snapshot(session: Session, vault: TextVault, member_id: str) -> MemberSnapshot | None:
    """The member as HQ holds them now, or None (unknown, or known only from entries).

    The name and birthday are opened with HQ's data key (``vault``): the store's kiosks need
    them for the perks, and the feed travels over TLS to the stores holding the member only.
    """
    member = session.get(CentralMember, member_id)
    if member is None or member.tier == UNKNOWN_TIER:
        return None
    name = None if member.deleted else name_of(vault, member)
    cards = list(
        session.scalars(
            select(CentralCard)
            .where(CentralCard.member_id == member_id)
            .order_by(CentralCard.card_no)
        )
    )
    rows = list(
        session.scalars(
            select(CentralEntry)
            .where(CentralEntry.member_id == member_id)
            .order_by(CentralEntry.at, CentralEntry.points.desc(), CentralEntry.id)
            .limit(MAX_SNAPSHOT_ENTRIES)
        )
    )
    dates = _lot_dates(
        session,
        [r for r in rows if r.points > 0 and r.expires_at is None and r.kind not in MERGE_KINDS],
    )
    notes = merge_notes(session, {r.ref for r in rows if r.kind in MERGE_KINDS})
    entries = []
    for row in rows:
        available, expires = row.available_at, row.expires_at
        if row.points > 0 and expires is None:
            available, expires = dates.get(row.id, (None, None))
        lot_id = row.lot_id if expires is not None or row.points < 0 else None
        entries.append(
            LedgerEntryData(
                id=row.id,
                member_id=row.member_id,
                kind=row.kind,
                points=row.points,
                lot_id=lot_id,
                ref=row.ref,
                at=row.at,
                store_id=row.store_id,
                device_id=row.device_id,
                expires_at=expires,
                available_at=available or (row.at if expires is not None else None),
                note=notes.get(row.ref, "") if row.kind in MERGE_KINDS else "",
            )
        )
    return MemberSnapshot(
        member_id=member.id,
        store_id=member.store_id,
        tier=member.tier,
        phone_hash=None if member.deleted else member.phone_hash,
        phone_masked="" if member.deleted else member.phone_masked,
        name=None if member.deleted or not name else name[:32],
        birthday=None if member.deleted else birthday_of(vault, member),
        consent_version=member.consent_version or IMPORTED_CONSENT,
        created_at=member.created_at,
        deleted=member.deleted,
        cards=[
            SnapshotCard(card_no=c.card_no, state=c.state, card_type="physical")
            for c in cards
            if c.state in ("active", "lost", "blocked", "replaced")
        ],
        entries=entries,
        redemptions=_redemptions(session, member_id),
        merged_into=member.merged_into,
        merged_from=merged_from(session, member_id),
    )


def merged_from(session: Session, member_id: str) -> list[str]:
    """The members merged into this one at HQ (hq.merges)."""
    return list(
        session.scalars(
            select(CentralMember.id)
            .where(CentralMember.merged_into == member_id)
            .order_by(CentralMember.id)
            .limit(100)
        )
    )


def merge_notes(session: Session, refs: Iterable[str]) -> dict[str, str]:
    """The note of each merge a ledger entry's ref names (``merge:<merge id>``)."""
    wanted = {ref.partition(":")[2]: ref for ref in refs if ref.startswith("merge:")}
    if not wanted:
        return {}
    return {
        wanted[merge_id]: note
        for merge_id, note in session.execute(
            select(MemberMerge.merge_id, MemberMerge.note).where(
                MemberMerge.merge_id.in_(sorted(wanted))
            )
        ).tuples()
    }


def _redemptions(session: Session, member_id: str) -> list[SnapshotRedemption]:
    """The member's gift and coupon redemptions at every device, read from the
    ``gift.redeemed`` events of their redemption entries (what a per-member limit counts)."""
    events = sorted(
        set(
            session.scalars(
                select(CentralEntry.event_id).where(
                    CentralEntry.member_id == member_id, CentralEntry.kind == "redemption"
                )
            )
        )
    )
    found: dict[str, SnapshotRedemption] = {}
    for start in range(0, len(events), 900):
        chunk = events[start : start + 900]
        for payload in session.scalars(
            select(StoredEvent.payload).where(StoredEvent.event_id.in_(chunk))
        ):
            try:
                data = Event.model_validate_json(payload).typed_data
            except (ProtocolError, ValueError):
                continue
            if (
                not isinstance(data, GiftRedeemedData)
                or data.member_id != member_id
                or not data.redemption_id
                or not data.sku
                or data.qty < 1
            ):
                continue
            found[data.redemption_id] = SnapshotRedemption(
                redemption_id=data.redemption_id, sku=data.sku, qty=data.qty
            )
    return [found[k] for k in sorted(found)][:MAX_SNAPSHOT_ENTRIES]


def _lot_dates(
    session: Session, credits: list[CentralEntry]
) -> dict[str, tuple[datetime | None, datetime | None]]:
    """Lot dates of credits stored before HQ kept them, read from their events."""
    if not credits:
        return {}
    wanted = {c.id for c in credits}
    events = sorted({c.event_id for c in credits})
    dates: dict[str, tuple[datetime | None, datetime | None]] = {}
    for start in range(0, len(events), 900):
        chunk = events[start : start + 900]
        for payload in session.scalars(
            select(StoredEvent.payload).where(StoredEvent.event_id.in_(chunk))
        ):
            try:
                data = Event.model_validate_json(payload).typed_data
            except (ProtocolError, ValueError):
                continue
            if isinstance(data, EntriesData):
                for entry in data.entries:
                    if entry.id in wanted:
                        dates[entry.id] = (entry.available_at, entry.expires_at)
    return dates


def find_member(
    session: Session, card_no: str | None = None, phone_hash: str | None = None
) -> str | None:
    if card_no is not None:
        return session.scalar(select(CentralCard.member_id).where(CentralCard.card_no == card_no))
    found = session.execute(
        select(CentralMember.id, CentralMember.merged_into)
        .where(CentralMember.phone_hash == phone_hash, CentralMember.deleted.is_(False))
        .order_by(CentralMember.merged_into.is_not(None), CentralMember.id)
        .limit(1)
    ).first()
    if found is None:
        return None
    member_id, merged_into = found
    for _ in range(8):  # the phone of a record merged away finds the member it went into
        if merged_into is None:
            break
        member_id = merged_into
        merged_into = session.scalar(
            select(CentralMember.merged_into).where(CentralMember.id == member_id)
        )
    return str(member_id)


def fetch(
    session: Session,
    vault: TextVault,
    store_id: str,
    now: datetime,
    card_no: str | None = None,
    phone_hash: str | None = None,
) -> tuple[MemberSnapshot | None, list[FeedNumbered]]:
    """A store asks for a member it does not hold: their snapshot, and from now on their
    changes in the store's feed (a snapshot item there too, for the store's other kiosks).

    Returns the snapshot (None: no such member at HQ, or known only from entries) and the
    feed items this made.
    """
    member_id = find_member(session, card_no, phone_hash)
    if member_id is None or not lock_members(session, [member_id]):
        return None, []
    found = snapshot(session, vault, member_id)
    if found is None:
        return None, []
    # The records merged into the member come too (their lots are the member's now).
    absorbed = found.merged_from
    new = hold(session, [(m, store_id) for m in [*absorbed, member_id]], now)
    fresh = {m for m, _ in new}
    wanted: list[tuple[int | None, str | None]] = [
        (None, m) for m in [*absorbed, member_id] if m in fresh
    ]
    items = append(session, {store_id: wanted}) if wanted else {}
    return found, items.get(store_id, [])


def feed_chunk(
    session: Session, vault: TextVault, store_id: str, after: int
) -> tuple[int, list[ReplicaEvent]]:
    """Items of ``store_id``'s feed after ``after``: (the last number covered, the items).

    Members known only from entries have no snapshot yet and are left out (their
    registration comes as an event); the numbers they took are covered all the same.
    """
    rows = session.execute(
        select(FeedItem.feed_seq, FeedItem.hq_seq, FeedItem.member_id, StoredEvent.payload)
        .outerjoin(StoredEvent, StoredEvent.hq_seq == FeedItem.hq_seq)
        .where(FeedItem.store_id == store_id, FeedItem.feed_seq > after)
        .order_by(FeedItem.feed_seq)
        .limit(FEED_CHUNK)
    ).all()
    items: list[ReplicaEvent] = []
    last = after
    entries = 0
    for feed_seq, _hq_seq, member_id, payload in rows:
        if member_id is not None:
            found = snapshot(session, vault, member_id)
            if found is not None:
                if items and entries + len(found.entries) > FEED_CHUNK_ENTRIES:
                    break
                entries += len(found.entries)
                items.append(ReplicaEvent(hq_seq=feed_seq, member=found))
        elif payload is not None:
            event = as_relayed(session, vault, Event.model_validate_json(payload))
            items.append(ReplicaEvent(hq_seq=feed_seq, event=event))
        last = feed_seq
    return last, items
