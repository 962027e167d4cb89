"""The central ledger: stores each event once, applies its entries, reconciles and alerts.

Deduplication is by event id, so a batch resent after a lost ack changes nothing but gets
acknowledged again. A device's events are stored in its outbox order only (``DeviceSequence``
keeps the next seq expected), and only events that are the device's own: see
:meth:`CentralLedger.ingest`. A member whose balance goes negative (the same points redeemed at two
offline stores) is flagged with an ``overdraft`` alert: nothing is dropped, staff decide.
A card used at two stores within ``clone_window`` raises ``card_clone_suspect``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from edge.domain.errors import ConfigError, IntegrityError
from edge.domain.ids import IdFactory
from edge.domain.points import EntryKind
from edge.protocol import (
    AdjustmentData,
    EntriesData,
    Event,
    EventBatch,
    MemberRegisteredData,
    ProtocolError,
)
from edge.protocol.messages import (
    CardBlocklistData,
    CardReplacedData,
    CouponUsedData,
    DeviceAlertData,
    GiftCollectedData,
    GiftRedeemedData,
    LowStockData,
    MemberDeletedData,
    MemberMessageConsentData,
    MemberUpdatedData,
    TierChangedData,
    VoucherLapsedData,
)
from edge.security.personal import TextVault
from hq.audit import Actor
from hq.bulk import among, insert_rows, stored_time
from hq.contact import KIOSK_SOURCE, set_message_consent
from hq.contact_key import PhoneIntake
from hq.coupons import issue_at_registration, record_use
from hq.device_coupons import record_coupons
from hq.feeds import (
    UNKNOWN_TIER,
    FeedNumbered,
    add_holders,
    append,
    event_members,
    holders,
    lock_members,
    touch_holders,
)
from hq.models import (
    EVENT_COUNTER,
    Alert,
    CardUse,
    CentralCard,
    CentralEntry,
    CentralMember,
    ChainCounter,
    DeviceSequence,
    EnrolledDevice,
    FleetDevice,
    QuarantinedEvent,
    StoredEvent,
    VoucherCollection,
)
from hq.personal import (
    as_relayed,
    erase_personal,
    personal_columns,
    set_personal,
    stored_json,
    without_sealed_phone,
)
from hq.rollups import Rollup
from hq.stock import record_stock
from hq.vouchers import CLAIMED, collect_first, record_voucher

log = logging.getLogger(__name__)

CARD_USE_KINDS = frozenset({"points.accrued", "gift.redeemed", "points.checkin", "points.birthday"})


@dataclass
class Ingest:
    """The outcome of one batch: what to acknowledge, and the newly stored events in order."""

    acked: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    stored: list[tuple[int, Event]] = field(default_factory=list)  # (hq_seq, event), in order
    blocked_cards: list[tuple[str, str]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    gap: bool = False
    expect_seq: int | None = None  # told to the device when it must resend from there
    next_seq: int = 1
    # The stores' feeds this batch added to: {store: [(feed_seq, hq_seq, member_id)]}.
    feed: dict[str, list[FeedNumbered]] = field(default_factory=dict)
    # Applied but not numbered yet (see CentralLedger.number): rows, events, members named.
    unnumbered: tuple[list[dict[str, Any]], list[Event], list[set[str]]] | None = None


class SequenceMoved(Exception):
    """Another writer stored events of the same device meanwhile: run the batch again."""


def next_seq(session: Session, device_id: str) -> int:
    """The seq HQ stores next for ``device_id`` (1 for a device never heard of)."""
    return next_seqs(session, [device_id])[device_id]


def advance_seq(session: Session, device_id: str, before: int, after: int, now: datetime) -> None:
    """Moves the device's sequence from ``before`` to ``after``, only if it still is ``before``.

    Raises:
        SequenceMoved: another writer moved it first (nothing of this batch is kept).
    """
    advance_seqs(session, {device_id: (before, after)}, now)


def next_seqs(session: Session, device_ids: list[str]) -> dict[str, int]:
    """The seq HQ stores next for each device (1 for a device never heard of), in one or two
    queries. A database from before sequences were kept starts after the device's highest
    stored seq."""
    conn = session.connection()
    found = {
        str(d): int(n)
        for d, n in conn.execute(
            select(DeviceSequence.device_id, DeviceSequence.next_seq).where(
                DeviceSequence.device_id.in_(device_ids)
            )
        ).tuples()
    }
    missing = [d for d in device_ids if d not in found]
    if missing:
        highest = dict(
            conn.execute(
                select(StoredEvent.device_id, func.max(StoredEvent.device_seq))
                .where(StoredEvent.device_id.in_(missing))
                .group_by(StoredEvent.device_id)
            )
            .tuples()
            .all()
        )
        for d in missing:
            found[d] = int(highest.get(d) or 0) + 1
    return found


def advance_seqs(session: Session, moves: dict[str, tuple[int, int]], now: datetime) -> None:
    """Moves each device's sequence, ``moves[device] = (before, after)``, only if it still is
    ``before``: one statement (two more for devices never heard of).

    Raises:
        SequenceMoved: another writer moved one of them first (nothing of this transaction
            is kept).
    """
    if not moves:
        return
    conn = session.connection()
    table = cast(Table, DeviceSequence.__table__)
    devices = sorted(moves)
    moved = set(
        conn.execute(
            update(table)
            .where(
                tuple_(table.c.device_id, table.c.next_seq).in_([(d, moves[d][0]) for d in devices])
            )
            .values(
                next_seq=case({d: moves[d][1] for d in devices}, value=table.c.device_id),
                updated_at=now,
            )
            .returning(table.c.device_id)
        ).scalars()
    )
    rest = [d for d in devices if d not in moved]
    if not rest:
        return
    exists = conn.execute(select(table.c.device_id).where(table.c.device_id.in_(rest))).first()
    if exists is not None:
        raise SequenceMoved(str(exists[0]))
    conn.execute(
        insert(table), [{"device_id": d, "next_seq": moves[d][1], "updated_at": now} for d in rest]
    )


def device_stores(session: Session, device_ids: list[str]) -> dict[str, str]:
    """The store of each device HQ knows of (:func:`device_store`), in one or two queries."""
    conn = session.connection()
    found = {
        str(d): str(s)
        for d, s in conn.execute(
            select(EnrolledDevice.device_id, EnrolledDevice.store_id).where(
                EnrolledDevice.device_id.in_(device_ids)
            )
        ).tuples()
        if s
    }
    rest = [d for d in device_ids if d not in found]
    if rest:
        found.update(
            (str(d), str(s))
            for d, s in conn.execute(
                select(FleetDevice.device_id, FleetDevice.store_id).where(
                    FleetDevice.device_id.in_(rest)
                )
            ).tuples()
            if s
        )
    return found


def take_numbers(session: Session, count: int) -> int:
    """Gives ``count`` consecutive chain numbers (``hq_seq``) and returns the first.

    Called last in a writer's transaction: the counter's row stays locked until the
    transaction ends, so writers commit their numbers in order and a rolled-back one gives
    them back (see :class:`~hq.models.ChainCounter`).
    """
    last = session.execute(
        update(ChainCounter)
        .where(ChainCounter.name == EVENT_COUNTER)
        .values(value=ChainCounter.value + count)
        .returning(ChainCounter.value)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    return int(last) - count + 1


def device_store(session: Session, device_id: str) -> str | None:
    """The store a device belongs to: as enrolled at HQ, else as first heard of."""
    return device_stores(session, [device_id]).get(device_id)


def foreign(event: Event, device_id: str, batch_device: str, store_id: str | None) -> str:
    """Why an event's envelope is not ``device_id``'s own ("" when it is)."""
    if event.device_id != device_id or batch_device != device_id:
        return f"device {event.device_id} in a batch from {device_id}"
    if store_id is not None and event.store_id != store_id:
        return f"store {event.store_id} in an event of {device_id}, which is at {store_id}"
    return ""


def foreign_entries(event: Event, data: object) -> str:
    """Why a ledger entry inside the event is not the publishing device's ("" if all are)."""
    if not isinstance(data, EntriesData):
        return ""
    for entry in data.entries:
        if entry.device_id != event.device_id or entry.store_id != event.store_id:
            return (
                f"entry {entry.id} of {entry.device_id} at {entry.store_id} in an event of "
                f"{event.device_id} at {event.store_id}"
            )
    return ""


@dataclass(frozen=True)
class AlertRow:
    """An alert to open: see :func:`raise_alerts`."""

    kind: str
    subject: str
    detail: str
    store_id: str = ""
    device_id: str = ""


def raise_alert(
    session: Session,
    kind: str,
    subject: str,
    detail: str,
    at: datetime,
    store_id: str = "",
    device_id: str = "",
) -> bool:
    """Opens an alert unless one of the same kind and subject is open; True if new."""
    return bool(raise_alerts(session, [AlertRow(kind, subject, detail, store_id, device_id)], at))


def raise_alerts(session: Session, alerts: list[AlertRow], at: datetime) -> set[tuple[str, str]]:
    """Opens each alert unless one of the same kind and subject is open; returns the (kind,
    subject) of those opened.

    One statement: the open alerts' unique index (``uq_hq_alert_open``) decides, so two
    workers raising the same alert at once open it once.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for a in alerts:
        rows.setdefault(
            (a.kind, a.subject[:96]),
            {
                "kind": a.kind,
                "subject": a.subject[:96],
                "detail": a.detail,
                "store_id": a.store_id,
                "device_id": a.device_id,
                "raised_at": at,
            },
        )
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    make = postgresql_insert if dialect == "postgresql" else sqlite_insert
    opened: set[tuple[str, str]] = set()
    listed = list(rows.values())
    for start in range(0, len(listed), 500):
        statement = (
            make(Alert)
            .values(listed[start : start + 500])
            .on_conflict_do_nothing(
                index_elements=["kind", "subject"], index_where=Alert.cleared_at.is_(None)
            )
            .returning(Alert.kind, Alert.subject)
        )
        opened |= {(k, s) for k, s in session.connection().execute(statement).tuples()}
    return opened


def clear_alert(session: Session, kind: str, subject: str, at: datetime) -> None:
    session.execute(
        update(Alert)
        .where(Alert.kind == kind, Alert.subject == subject[:96], Alert.cleared_at.is_(None))
        .values(cleared_at=at)
    )


class CentralLedger:
    """Applies batches to the central tables (one transaction per batch, by the caller)."""

    def __init__(
        self, clone_window: timedelta, vault: TextVault, intake: PhoneIntake | None = None
    ) -> None:
        """``vault``: HQ's data key, which seals the names and birthdays registrations bring.
        ``intake``: what opens the phone numbers kiosks seal for members who agree to
        messages (None: HQ has no contact key; consents are kept, the numbers alerted)."""
        self.clone_window = clone_window
        self.vault = vault
        self.intake = intake or PhoneIntake(None, None)
        self.ids = IdFactory()  # for the coupons registrations earn

    def ingest(
        self,
        session: Session,
        device_id: str,
        batch: EventBatch,
        now: datetime,
    ) -> Ingest:
        """Stores the batch's events that continue ``device_id``'s sequence, in seq order.

        An event already stored (or quarantined) is acknowledged again as it was. An event
        past the next expected seq is neither stored nor acknowledged: an earlier one is
        missing, and ``expect_seq`` tells the device to resend from it. An unknown event id
        on a seq already taken (a cloned device, or a bug) is quarantined and alerted, never
        stored. An event that does not belong to the device (another device or store in its
        envelope or in any of its ledger entries) or whose data fails its schema is
        quarantined too; a quarantined event still takes its seq, so the device's later
        events are not held up behind it.
        """
        return self.ingest_many(session, [(device_id, batch)], now)[0]

    def ingest_many(
        self,
        session: Session,
        batches: list[tuple[str, EventBatch]],
        now: datetime,
    ) -> list[Ingest]:
        """:meth:`ingest` of several batches in one transaction, with the same statements
        whatever their number: what HQ reads and writes for them is read and written for all
        of them at once. A device's batches follow each other in its outbox order."""
        devices = list(dict.fromkeys(device_id for device_id, _ in batches))
        conn = session.connection()
        ids = [e.event_id for _, batch in batches for e in batch.events]
        known: set[str] = set()
        set_aside: dict[tuple[str, str], str] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            known |= set(
                conn.execute(
                    select(StoredEvent.event_id).where(among(conn, StoredEvent.event_id, chunk))
                ).scalars()
            )
            for event_id, device_id, reason in conn.execute(
                select(
                    QuarantinedEvent.event_id, QuarantinedEvent.device_id, QuarantinedEvent.reason
                ).where(among(conn, QuarantinedEvent.event_id, chunk))
            ).tuples():
                set_aside[(event_id, device_id)] = reason
        expected_of = next_seqs(session, devices)
        stores = device_stores(session, devices)
        results: list[Ingest] = []
        typed: list[tuple[Event, Any, Ingest]] = []
        rows_of: list[list[dict[str, Any]]] = []
        moves: dict[str, tuple[int, int]] = {}
        for device_id, batch in batches:
            result = Ingest()
            results.append(result)
            rows: list[dict[str, Any]] = []
            rows_of.append(rows)
            expected = expected_of[device_id]
            store_id = stores.get(device_id)
            for event in sorted(batch.events, key=lambda e: e.seq):
                if event.event_id in known:
                    result.acked.append(event.event_id)
                    continue
                if (event.event_id, device_id) in set_aside:
                    result.quarantined.append(
                        (event.event_id, set_aside[(event.event_id, device_id)])
                    )
                    continue
                if event.seq > expected:
                    result.gap = True
                    result.expect_seq = expected
                    break
                data = None
                reason = ""
                if event.seq < expected:
                    reason = f"seq {event.seq} of {device_id} is already taken by another event"
                    result.expect_seq = expected
                    if raise_alert(
                        session,
                        "event_seq_conflict",
                        device_id,
                        f"{device_id} sent event {event.event_id} with seq {event.seq}, which "
                        "another of its events already holds: a cloned device or a fault",
                        now,
                        event.store_id,
                        device_id,
                    ):
                        result.alerts.append("event_seq_conflict")
                else:
                    reason = foreign(event, device_id, batch.device_id, store_id)
                if not reason:
                    try:
                        data = event.typed_data
                    except ProtocolError as exc:
                        reason = str(exc)
                    else:
                        reason = foreign_entries(event, data)
                if reason:
                    self.quarantine(session, event, device_id, reason, now, result)
                    set_aside[(event.event_id, device_id)] = reason[:256]
                    if event.seq == expected:
                        expected += 1
                    continue
                if store_id is None:
                    store_id = event.store_id
                expected += 1
                known.add(event.event_id)
                rows.append(
                    {
                        "event_id": event.event_id,
                        "device_id": event.device_id,
                        "store_id": event.store_id,
                        "device_seq": event.seq,
                        "kind": event.kind,
                        "at": event.at,
                        "payload": stored_json(event),
                        "received_at": now,
                    }
                )
                typed.append((event, data, result))
                result.acked.append(event.event_id)
            if expected != expected_of[device_id]:
                moves[device_id] = (moves.get(device_id, (expected_of[device_id], 0))[0], expected)
                expected_of[device_id] = expected
            if store_id is not None:
                stores[device_id] = store_id
            result.next_seq = expected
        advance_seqs(session, moves, now)
        if typed:
            # The members the events name, locked before anything reads who holds them.
            named = [event_members(session, data) for _, data, _ in typed]
            lock_members(session, set().union(*named))
            rollup = Rollup()
            self._apply(session, typed, now, rollup)
            # Each batch's applied events are a run of ``typed``, as long as its rows.
            start = 0
            for result, rows in zip(results, rows_of, strict=True):
                if rows:
                    mine = slice(start, start + len(rows))
                    result.unnumbered = (rows, [e for e, _, _ in typed[mine]], named[mine])
                    start += len(rows)
            self.number(session, results, now, rollup)
        return results

    def number(
        self, session: Session, results: list[Ingest], now: datetime, rollup: Rollup | None = None
    ) -> None:
        """Numbers and stores the events the batches applied, last in the transaction: the
        reports' rollups of what they stored (``rollup``), the chain's numbers, then the
        stores' feeds, whose counters are then held only for these inserts and the commit.
        Several batches stored in one transaction are numbered together, in their order."""
        waiting = [r for r in results if r.unnumbered is not None]
        rows: list[dict[str, Any]] = []
        stored: list[tuple[int, Event]] = []
        named: list[set[str]] = []
        count = sum(len(r.unnumbered[0]) for r in waiting if r.unnumbered is not None)
        if rollup is not None:
            # Just before the counter: the chain's rows, which every writer of the day takes
            # in turn, are held no longer than the counter is.
            rollup.write(session)
        if not count:
            return
        first = take_numbers(session, count)
        for result in waiting:
            assert result.unnumbered is not None
            batch_rows, events, batch_named = result.unnumbered
            result.unnumbered = None
            for offset, (row, event) in enumerate(zip(batch_rows, events, strict=True)):
                row["hq_seq"] = first + len(rows) + offset
                # relayed as stored: never with the phone number sealed for HQ
                result.stored.append((row["hq_seq"], without_sealed_phone(event)))
            rows += batch_rows
            stored += result.stored
            named += batch_named
        insert_rows(session.connection(), StoredEvent, rows)
        owner = {hq_seq: result for result in waiting for hq_seq, _ in result.stored}
        for store_id, items in self._feed(session, stored, named, now).items():
            for item in items:
                assert item[1] is not None
                owner[item[1]].feed.setdefault(store_id, []).append(item)

    @staticmethod
    def _feed(
        session: Session,
        stored: list[tuple[int, Event]],
        named: list[set[str]],
        now: datetime,
    ) -> dict[str, list[FeedNumbered]]:
        """Each stored event goes to the feeds of the stores that hold a member it names;
        the store it comes from holds them from now on."""
        held = holders(session, set().union(*named))
        fresh = {
            (m, event.store_id)
            for (_, event), members in zip(stored, named, strict=True)
            for m in members
            if event.store_id not in held.get(m, ())
        }
        if fresh:
            add_holders(session, sorted(fresh), now)
            for m, store_id in fresh:
                held.setdefault(m, set()).add(store_id)
        seen = {
            (m, event.store_id)
            for (_, event), members in zip(stored, named, strict=True)
            for m in members
        }
        touch_holders(session, sorted(seen - fresh), now)
        items: dict[str, list[tuple[int | None, str | None]]] = defaultdict(list)
        for (hq_seq, _event), members in zip(stored, named, strict=True):
            for store_id in sorted(set().union(*(held.get(m, set()) for m in members))):
                items[store_id].append((hq_seq, None))
        return append(session, items)

    @staticmethod
    def quarantine(
        session: Session, event: Event, device_id: str, reason: str, now: datetime, result: Ingest
    ) -> None:
        session.add(
            QuarantinedEvent(
                event_id=event.event_id,
                device_id=device_id,
                reason=reason[:256],
                payload=event.model_dump_json(),
                received_at=now,
            )
        )
        result.quarantined.append((event.event_id, reason[:256]))
        log.error("quarantined event %s of %s: %s", event.event_id, device_id, reason[:256])

    # ------------------------------------------------------------------ applying

    def _apply(
        self,
        session: Session,
        typed: list[tuple[Event, Any, Ingest]],
        now: datetime,
        rollup: Rollup,
    ) -> None:
        """Applies the events, each batch's alerts and blocked cards going to its result.

        Registrations first (members and cards, one INSERT each), then every event's entries
        (one INSERT), balances (one UPDATE), the rest in order, the overdraft and clone checks.
        What the reports count of them is added to ``rollup``: each entry under its member's
        tier as it is when the entry is applied.
        """
        conn = session.connection()
        all_entry_ids = [e.id for _, d, _ in typed if isinstance(d, EntriesData) for e in d.entries]
        existing: set[str] = set()
        for start in range(0, len(all_entry_ids), 900):
            chunk = all_entry_ids[start : start + 900]
            existing |= set(
                conn.execute(
                    select(CentralEntry.id).where(among(conn, CentralEntry.id, chunk))
                ).scalars()
            )
        # One query for every member the events name, instead of one per event.
        named = {e.member_id for _, d, _ in typed if isinstance(d, EntriesData) for e in d.entries}
        named |= {d.member_id for _, d, _ in typed if isinstance(d, EntriesData)}
        tiers: dict[str, str] = {}
        merged: dict[str, str] = {}  # members merged into another at HQ (hq.merges)
        listed = sorted(named)
        for start in range(0, len(listed), 900):
            chunk = listed[start : start + 900]
            for member_id, tier, merged_into in conn.execute(
                select(CentralMember.id, CentralMember.tier, CentralMember.merged_into).where(
                    among(conn, CentralMember.id, chunk)
                )
            ).tuples():
                tiers[member_id] = tier
                if merged_into is not None:
                    merged[member_id] = merged_into
        registrations = [(e, d) for e, d, _ in typed if isinstance(d, MemberRegisteredData)]
        self._register(session, registrations, tiers, self.vault, rollup)
        issue_at_registration(session, registrations, self.ids)
        for event, data in registrations:
            if data.message_consent_version is not None or data.phone_sealed is not None:
                self._message_consent(
                    session,
                    event,
                    data.member_id,
                    data.message_consent_version,
                    data.phone_sealed,
                    now,
                    next(r for e, _, r in typed if e is event),
                )
        entries: list[dict[str, Any]] = []
        deltas: dict[str, int] = defaultdict(int)
        debited: dict[str, Ingest] = {}
        seen_entries: set[str] = set()
        uses: list[tuple[Event, Ingest]] = []
        for event, data, result in typed:
            if isinstance(data, EntriesData):
                for member_id in [data.member_id, *(e.member_id for e in data.entries)]:
                    if member_id not in tiers:
                        self._placeholder(session, event, member_id)
                        tiers[member_id] = UNKNOWN_TIER
                taken = returned = 0  # by its redemption and voucher return entries stored
                for e in data.entries:
                    if e.id in existing or e.id in seen_entries:
                        continue
                    seen_entries.add(e.id)
                    tier = tiers.get(e.member_id, UNKNOWN_TIER)
                    rollup.entry(e.at, e.store_id, tier, e.kind, e.points)
                    if e.kind == EntryKind.REDEMPTION:
                        taken -= e.points
                    elif e.kind == EntryKind.VOUCHER_RETURN:
                        returned += e.points
                    entries.append(
                        {
                            "id": e.id,
                            "member_id": e.member_id,
                            "kind": e.kind,
                            "points": e.points,
                            "lot_id": e.lot_id,
                            "ref": e.ref,
                            "store_id": e.store_id,
                            "device_id": e.device_id,
                            "at": e.at,
                            "event_id": event.event_id,
                            "available_at": e.available_at if e.points > 0 else None,
                            "expires_at": e.expires_at if e.points > 0 else None,
                            "tier": tier,
                        }
                    )
                    deltas[e.member_id] += e.points
                    if e.points < 0:
                        debited[e.member_id] = result
                if event.kind in CARD_USE_KINDS and data.card_no:
                    uses.append((event, result))
                if isinstance(data, GiftRedeemedData):
                    record_voucher(session, event, data)
                    record_coupons(session, event, data)
                    rollup.redeemed(event.at, event.store_id, data.sku, data.name, data.qty, taken)
                elif isinstance(data, VoucherLapsedData):
                    rollup.lapsed(event.at, event.store_id, data.sku, returned)
            elif isinstance(data, MemberUpdatedData):
                member = session.get(CentralMember, data.member_id)
                if member is not None:
                    member.phone_masked = data.phone_masked
                    member.phone_hash = data.phone_hash
                    member.updated_at = event.at
                    if member.phone_enc is not None and not self.intake.holds(
                        member.phone_enc, data.phone_hash
                    ):  # another number now: never message the old one
                        member.phone_enc = None
            elif isinstance(data, MemberMessageConsentData):
                self._message_consent(
                    session, event, data.member_id, data.version, data.phone_sealed, now, result
                )
            elif isinstance(data, MemberDeletedData):
                member = session.get(CentralMember, data.member_id)
                if member is not None:
                    if (
                        not member.deleted
                        and member.merged_into is None
                        and member.tier != UNKNOWN_TIER
                    ):
                        rollup.departed(max(member.created_at, event.at), member.store_id)
                    member.deleted = True
                    erase_personal(member)
                    member.updated_at = event.at
                for card_no in data.cards_blocked:
                    self._card_state(session, card_no, "blocked")
            elif isinstance(data, TierChangedData):
                member = session.get(CentralMember, data.member_id)
                if member is not None:
                    member.tier = data.after
                    tiers[data.member_id] = data.after  # the entries after it count so
            elif isinstance(data, CardReplacedData):
                self._card_state(session, data.old_card_no, "replaced")
                if session.get(CentralCard, data.new_card_no) is None:
                    session.add(
                        CentralCard(
                            card_no=data.new_card_no,
                            member_id=data.member_id,
                            state="active",
                            store_id=event.store_id,
                        )
                    )
            elif isinstance(data, CardBlocklistData):
                for card_no in data.add:
                    self._card_state(
                        session, card_no, "lost" if data.reason == "lost" else "blocked"
                    )
                    result.blocked_cards.append((card_no, data.reason))
            elif isinstance(data, GiftCollectedData):
                self._collected(session, event, data, now, result)
            elif isinstance(data, CouponUsedData):
                used = record_use(session, event, data)
                if used is not None and raise_alert(
                    session, used.kind, used.subject, used.detail, now,
                    event.store_id, event.device_id,
                ):  # fmt: skip
                    result.alerts.append(used.kind)
            elif isinstance(data, LowStockData):
                if raise_alert(
                    session,
                    "gift_low_stock",
                    f"{event.store_id}:{data.sku}",
                    f"{data.sku} at {event.store_id}: {data.stock} left "
                    f"(threshold {data.threshold})",
                    now,
                    event.store_id,
                    event.device_id,
                ):
                    result.alerts.append("gift_low_stock")
            elif isinstance(data, DeviceAlertData) and raise_alert(
                session,
                data.code,
                event.device_id,
                data.detail,
                now,
                event.store_id,
                event.device_id,
            ):
                result.alerts.append(data.code)
        record_stock(session, [event for event, _, _ in typed])
        session.flush()
        if entries:
            insert_rows(conn, CentralEntry, entries)
        # The members are locked already (lock_members), so the order does not matter here.
        add_to_balances(session, {m: d for m, d in deltas.items() if d}, now)
        self._merged_moved(
            session, {m: d for m, d in deltas.items() if d and m in merged}, merged, now
        )
        # Only a debit can drive a balance below zero; only an adjustment settles it.
        self._reconcile(session, debited, now)
        self._clear_settled(
            session, {d.member_id for _, d, _ in typed if isinstance(d, AdjustmentData)}, now
        )
        self._check_clones(session, uses, now)

    @staticmethod
    def _merged_moved(
        session: Session, moved: dict[str, int], merged: dict[str, str], now: datetime
    ) -> None:
        """Points that moved on a record already merged into another (a store that used its
        card offline before it heard of the merge) stay where they were booked, and staff are
        told: ``merged_member_points``, to move them with an adjustment."""
        if not moved:
            return
        raise_alerts(
            session,
            [
                AlertRow(
                    "merged_member_points",
                    member_id,
                    f"{points:+d} points booked on member {member_id} after it was merged "
                    f"into {merged[member_id]}",
                )
                for member_id, points in sorted(moved.items())
            ],
            now,
        )

    @staticmethod
    def _register(
        session: Session,
        registrations: list[tuple[Event, MemberRegisteredData]],
        tiers: dict[str, str],
        vault: TextVault,
        rollup: Rollup,
    ) -> None:
        """New members and their cards, one INSERT each; a member known only from entries
        (a placeholder) is completed. Either joins the chain (``rollup``) that day."""
        if not registrations:
            return
        conn = session.connection()
        card_nos = sorted({data.card_no for _, data in registrations})
        cards: set[str] = set()
        for start in range(0, len(card_nos), 900):
            chunk = card_nos[start : start + 900]
            cards |= set(
                conn.execute(
                    select(CentralCard.card_no).where(CentralCard.card_no.in_(chunk))
                ).scalars()
            )
        new_members: list[dict[str, Any]] = []
        new_cards: list[dict[str, Any]] = []
        for event, data in registrations:
            if data.member_id not in tiers:
                new_members.append(
                    {
                        "id": data.member_id,
                        "store_id": event.store_id,
                        "tier": data.tier,
                        "phone_masked": data.phone_masked,
                        "phone_hash": data.phone_hash,
                        "consent_version": data.consent_version,
                        **personal_columns(vault, data.name, data.birthday),
                        "balance": 0,
                        "overdraft_flagged": False,
                        "deleted": False,
                        "created_at": event.at,
                        "updated_at": event.at,
                    }
                )
                tiers[data.member_id] = data.tier
                rollup.joined(event.at, event.store_id)
            elif tiers[data.member_id] == UNKNOWN_TIER:
                # Entries came first and made a placeholder: the registration completes it.
                member = session.get(CentralMember, data.member_id)
                if member is not None:
                    member.store_id, member.tier = event.store_id, data.tier
                    member.phone_masked, member.phone_hash = data.phone_masked, data.phone_hash
                    member.consent_version = data.consent_version
                    set_personal(vault, member, data.name, data.birthday)
                    member.created_at = event.at
                    tiers[data.member_id] = data.tier
                    rollup.joined(event.at, event.store_id)
                    if member.deleted and member.merged_into is None:
                        # Erased while HQ knew them only from entries: gone as they join.
                        rollup.departed(event.at, event.store_id)
            if data.card_no not in cards:
                cards.add(data.card_no)
                new_cards.append(
                    {
                        "card_no": data.card_no,
                        "member_id": data.member_id,
                        "state": "active",
                        "store_id": event.store_id,
                    }
                )
        if new_members:
            insert_rows(conn, CentralMember, new_members)
        if new_cards:
            insert_rows(conn, CentralCard, new_cards)

    def _message_consent(
        self,
        session: Session,
        event: Event,
        member_id: str,
        version: str | None,
        sealed: str | None,
        now: datetime,
        result: Ingest,
    ) -> None:
        """A consent to messages given (``version``) or withdrawn (None) at a kiosk, through
        :func:`hq.contact.set_message_consent` (the device is the actor); a phone number
        sealed with it is opened, checked against the member's lookup hash and kept under
        HQ's data key (``phone_enc``). A withdrawal forgets the number: HQ holds one only for
        members who agreed. A number that does not open or is not the member's is refused
        (``contact_phone_refused``); one HQ cannot open for want of its contact key is
        alerted once (``contact_key_missing``). The consent stands either way."""
        member = session.get(CentralMember, member_id)
        if member is None or member.deleted:
            log.warning("consent to messages for member %s unknown or deleted: ignored", member_id)
            return
        actor = Actor(event.device_id, KIOSK_SOURCE)
        set_message_consent(session, member, version, now=event.at, actor=actor)
        if version is None:  # the number is forgotten with the consent
            return
        if sealed is None:
            return
        refusal: tuple[str, str, str] | None = None
        try:
            member.phone_enc = self.intake.take(sealed, member.id, member.phone_hash)
        except ConfigError:
            refusal = (
                "contact_key_missing",
                "hq",
                "kiosks send phone numbers sealed for messages and HQ has no contact key "
                "(hq-contact.pem) or lookup key to open them: the members' consents are kept "
                "without a number",
            )
        except IntegrityError as exc:
            refusal = (
                "contact_phone_refused",
                member.id,
                f"a phone number sealed by {event.device_id} for member {member.id} was "
                f"refused: {exc.message}",
            )
        if refusal is not None and raise_alert(
            session, *refusal, now, event.store_id, event.device_id
        ):
            result.alerts.append(refusal[0])

    def _placeholder(self, session: Session, event: Event, member_id: str) -> None:
        """Entries for a member HQ has not heard of: keep them, and tell staff."""
        session.add(
            CentralMember(
                id=member_id,
                store_id=event.store_id,
                tier=UNKNOWN_TIER,
                balance=0,
                created_at=event.at,
                updated_at=event.at,
            )
        )
        session.flush()
        raise_alert(
            session,
            "member_unknown",
            member_id,
            f"entries from {event.device_id} for a member never registered at HQ",
            event.at,
            event.store_id,
            event.device_id,
        )

    @staticmethod
    def _card_state(session: Session, card_no: str, state: str) -> None:
        card = session.get(CentralCard, card_no)
        if card is not None and card.state in ("active", "lost"):
            card.state = state

    @staticmethod
    def _collected(
        session: Session, event: Event, data: GiftCollectedData, now: datetime, result: Ingest
    ) -> None:
        """Keeps the first collection of each gift voucher; a later one (the same voucher
        handed over at two desks, one of them offline, or a copy) raises
        ``voucher_collected_twice``: the gift is gone, staff decide."""
        if collect_first(
            session,
            data.issuer_device_id,
            data.voucher_id,
            event.store_id,
            event.device_id,
            event.event_id,
            event.at,
        ):
            return
        first = session.get(VoucherCollection, (data.issuer_device_id, data.voucher_id))
        if first is not None and first.event_id == CLAIMED and first.device_id == event.device_id:
            first.event_id = event.event_id  # the collection HQ granted this kiosk, as it told
            return
        before = (
            f"; first at {first.store_id} ({first.device_id}) {first.at:%Y-%m-%d %H:%M} UTC"
            if first is not None
            else ""
        )
        if raise_alert(
            session,
            "voucher_collected_twice",
            f"{data.issuer_device_id}:{data.voucher_id}",
            f"gift voucher {data.voucher_id} printed by {data.issuer_device_id} collected again "
            f"at {event.store_id} ({event.device_id}) {event.at:%Y-%m-%d %H:%M} UTC" + before,
            now,
            event.store_id,
            event.device_id,
        ):
            result.alerts.append("voucher_collected_twice")

    def _reconcile(self, session: Session, debited: dict[str, Ingest], now: datetime) -> None:
        """Flags members driven negative (offline double spend) and alerts staff; the alert
        goes to the result of the batch that debited them last."""
        if not debited:
            return
        session.expire_all()
        member_ids = sorted(debited)
        for start in range(0, len(member_ids), 900):
            chunk = member_ids[start : start + 900]
            for member in session.scalars(
                select(CentralMember).where(
                    CentralMember.id.in_(chunk),
                    CentralMember.balance < 0,
                    CentralMember.overdraft_flagged.is_(False),
                )
            ):
                member.overdraft_flagged = True
                raise_alert(
                    session,
                    "overdraft",
                    member.id,
                    f"balance {member.balance}: points taken back after they were spent (a "
                    "refund or a correction) or redeemed offline at several stores",
                    now,
                    member.store_id,
                )
                debited[member.id].alerts.append("overdraft")

    @staticmethod
    def _clear_settled(session: Session, member_ids: set[str], now: datetime) -> None:
        """Members an adjustment brought back to zero or above: the overdraft is settled,
        the flag and its alert clear together."""
        if not member_ids:
            return
        settled = session.scalars(
            select(CentralMember)
            .where(
                CentralMember.id.in_(sorted(member_ids)),
                CentralMember.overdraft_flagged.is_(True),
                CentralMember.balance >= 0,
            )
            .execution_options(populate_existing=True)  # balances were updated in SQL
        )
        for member in settled:
            member.overdraft_flagged = False
            clear_alert(session, "overdraft", member.id, now)

    def _check_clones(
        self, session: Session, uses: list[tuple[Event, Ingest]], now: datetime
    ) -> None:
        """A card used at two stores within ``clone_window`` raises ``card_clone_suspect``.

        The cards' last uses are read locked (on PostgreSQL), so two workers' uses of one card
        are compared in turn; then one statement records the new last uses
        (:func:`record_card_uses`), one opens the alerts."""
        if not uses:
            return
        conn = session.connection()
        table = cast(Table, CardUse.__table__)
        card_nos = sorted({str(e.data.get("card_no")) for e, _ in uses})
        last_use: dict[str, list[Any]] = {}  # card: [store, device, at]
        for start in range(0, len(card_nos), 900):
            chunk = card_nos[start : start + 900]
            for card_no, store_id, device_id, at in conn.execute(
                select(table.c.card_no, table.c.store_id, table.c.device_id, table.c.at)
                .where(among(conn, table.c.card_no, chunk))
                .order_by(table.c.card_no)
                .with_for_update()
            ).tuples():
                last_use[card_no] = [store_id, device_id, at]
        touched: set[str] = set()  # the cards whose last use this changes
        suspects: list[tuple[AlertRow, Ingest]] = []
        for event, result in uses:
            card_no = str(event.data.get("card_no"))
            last = last_use.get(card_no)
            if last is None:
                last_use[card_no] = [event.store_id, event.device_id, event.at]
                touched.add(card_no)
                continue
            if last[0] != event.store_id and abs(event.at - last[2]) <= self.clone_window:
                minutes = abs(event.at - last[2]).total_seconds() / 60
                suspects.append(
                    (
                        AlertRow(
                            "card_clone_suspect",
                            card_no,
                            f"card {card_no} used at {last[0]} and {event.store_id} "
                            f"{minutes:.1f} min apart",
                            event.store_id,
                            event.device_id,
                        ),
                        result,
                    )
                )
            if event.at >= last[2]:
                last[0], last[1], last[2] = event.store_id, event.device_id, event.at
                touched.add(card_no)
        record_card_uses(session, {c: last_use[c] for c in touched})
        new = raise_alerts(session, [alert for alert, _ in suspects], now)
        for alert, result in suspects:
            if (alert.kind, alert.subject[:96]) in new:
                new.discard((alert.kind, alert.subject[:96]))
                result.alerts.append(alert.kind)


def add_to_balances(session: Session, deltas: dict[str, int], now: datetime) -> None:
    """Adds ``deltas[member]`` to each member's balance: on PostgreSQL one statement for all
    (arrays, so its text and plan stay the same whatever their number); on SQLite, in the
    process, one UPDATE each."""
    if not deltas:
        return
    conn = session.connection()
    listed = sorted(deltas)
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "UPDATE hq_member AS m SET balance = m.balance + u.d, updated_at = :now "
                "FROM unnest(CAST(:ids AS varchar[]), CAST(:ds AS bigint[])) AS u(id, d) "
                "WHERE m.id = u.id"
            ),
            {"ids": listed, "ds": [deltas[m] for m in listed], "now": stored_time(now)},
        )
        return
    table = cast(Table, CentralMember.__table__)
    conn.execute(
        update(table)
        .where(table.c.id == bindparam("m"))
        .values(balance=table.c.balance + bindparam("d"), updated_at=now),
        [{"m": m, "d": deltas[m]} for m in listed],
    )


def record_card_uses(session: Session, uses: dict[str, list[Any]]) -> None:
    """Each card's last use (``uses[card] = [store, device, at]``), made or replaced: on
    PostgreSQL one statement for all, on SQLite one each."""
    if not uses:
        return
    conn = session.connection()
    listed = sorted(uses)
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "INSERT INTO hq_card_use (card_no, store_id, device_id, at) "
                "SELECT * FROM unnest(CAST(:c AS varchar[]), CAST(:s AS varchar[]), "
                "CAST(:d AS varchar[]), CAST(:t AS timestamp[])) "
                "ON CONFLICT (card_no) DO UPDATE SET store_id = excluded.store_id, "
                "device_id = excluded.device_id, at = excluded.at"
            ),
            {
                "c": listed,
                "s": [uses[c][0] for c in listed],
                "d": [uses[c][1] for c in listed],
                "t": [stored_time(uses[c][2]) for c in listed],
            },
        )
        return
    statement = sqlite_insert(CardUse)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["card_no"],
            set_={
                "store_id": statement.excluded.store_id,
                "device_id": statement.excluded.device_id,
                "at": statement.excluded.at,
            },
        ),
        [
            {"card_no": c, "store_id": uses[c][0], "device_id": uses[c][1], "at": uses[c][2]}
            for c in listed
        ],
    )


def stored_events(
    session: Session, vault: TextVault, after_seq: int, limit: int
) -> list[tuple[int, Event]]:
    """Stored events after ``after_seq``, in order (for a device catching up), as they are
    relayed (a registration with the name and birthday, opened with ``vault``)."""
    rows = session.execute(
        select(StoredEvent.hq_seq, StoredEvent.payload)
        .where(StoredEvent.hq_seq > after_seq)
        .order_by(StoredEvent.hq_seq)
        .limit(limit)
    ).all()
    return [
        (seq, as_relayed(session, vault, Event.model_validate_json(payload)))
        for seq, payload in rows
    ]


def balances(session: Session) -> dict[str, int]:
    return dict(session.execute(select(CentralMember.id, CentralMember.balance)).tuples().all())


def ledger_sums(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(CentralEntry.member_id, func.sum(CentralEntry.points)).group_by(
            CentralEntry.member_id
        )
    ).tuples()
    return {member_id: int(total) for member_id, total in rows}


def event_json(event: Event) -> str:
    return json.dumps(event.model_dump(mode="json"), sort_keys=True)
