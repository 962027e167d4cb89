"""Ledger bookkeeping shared by the use cases: open a lot, consume lots, record the entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from edge.domain.points import Lot, available_from, lot_expiry, plan_consumption
from edge.services.tx import Tx
from edge.storage.models import LedgerEntry, Member, PointsLot


@dataclass(frozen=True)
class EntryRecord:
    """A ledger entry as it travels in events and results."""

    id: str
    member_id: str
    kind: str
    points: int
    lot_id: str | None
    ref: str
    at: str
    store_id: str
    device_id: str
    expires_at: str | None = None
    available_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _record(tx: Tx, entry: LedgerEntry, lot: PointsLot | None = None) -> EntryRecord:
    return EntryRecord(
        id=entry.id,
        member_id=entry.member_id,
        kind=entry.kind,
        points=entry.points,
        lot_id=entry.lot_id,
        ref=entry.ref,
        at=entry.created_at.isoformat(),
        store_id=entry.store_id,
        device_id=entry.device_id,
        expires_at=lot.expires_at.isoformat() if lot is not None else None,
        available_at=lot.available_at.isoformat() if lot is not None else None,
    )


def credit(
    tx: Tx, member: Member, points: int, kind: str, ref: str, pending_days: int = 0
) -> EntryRecord:
    """Opens a lot of ``points`` for ``member`` with its ledger entry; updates the balance."""
    if points <= 0:  # callers refuse these first; this is the ledger's own line
        raise ValueError(f"a credit is a positive number of points, not {points}")
    lot = PointsLot(
        id=tx.new_id(),
        member_id=member.id,
        points=points,
        remaining=points,
        earned_at=tx.now,
        available_at=available_from(tx.now, pending_days),
        expires_at=lot_expiry(tx.now, tx.app.config.points.expiry_months, tx.app.tz),
    )
    tx.session.add(lot)
    tx.session.flush([lot])  # the entry references it; no ORM relationship orders them
    entry = LedgerEntry(
        id=tx.new_id(),
        member_id=member.id,
        kind=kind,
        points=points,
        lot_id=lot.id,
        ref=ref,
        store_id=tx.app.store_id,
        device_id=tx.app.device_id,
        created_at=tx.now,
    )
    tx.session.add(entry)
    member.balance += points
    member.updated_at = tx.now
    return _record(tx, entry, lot)


def open_lots(tx: Tx, member_id: str) -> list[PointsLot]:
    return list(
        tx.session.scalars(
            select(PointsLot)
            .where(PointsLot.member_id == member_id, PointsLot.remaining > 0)
            .order_by(PointsLot.expires_at, PointsLot.earned_at, PointsLot.id)
        )
    )


def as_lots(rows: list[PointsLot]) -> list[Lot]:
    return [Lot(r.id, r.remaining, r.available_at, r.expires_at, r.earned_at) for r in rows]


def _book(
    tx: Tx, member: Member, kind: str, points: int, lot_id: str | None, ref: str
) -> EntryRecord:
    """One ledger entry moving ``points`` (signed) for ``member``; updates the balance. The
    caller has already changed the lot's remaining points, if the entry names a lot."""
    entry = LedgerEntry(
        id=tx.new_id(),
        member_id=member.id,
        kind=kind,
        points=points,
        lot_id=lot_id,
        ref=ref,
        store_id=tx.app.store_id,
        device_id=tx.app.device_id,
        created_at=tx.now,
    )
    tx.session.add(entry)
    member.balance += points
    member.updated_at = tx.now
    return _record(tx, entry)


def debit(tx: Tx, member: Member, points: int, kind: str, ref: str) -> list[EntryRecord]:
    """Consumes ``points`` from the member's spendable lots, soonest-expiring first."""
    rows = open_lots(tx, member.id)
    plan = plan_consumption(as_lots(rows), points, tx.now)
    by_id = {r.id: r for r in rows}
    records = []
    for lot_id, take in plan:
        by_id[lot_id].remaining -= take
        records.append(_book(tx, member, kind, -take, lot_id, ref))
    return records


def take_back(
    tx: Tx, member: Member, points: int, kind: str, ref: str, lots: list[PointsLot]
) -> list[EntryRecord]:
    """Takes ``points`` from ``lots`` in order, whether spendable yet or not; what they no
    longer hold (already spent or expired) is a debit with no lot, and the balance goes below
    zero by that much: an overdraft for staff to settle, never a silent loss."""
    records = []
    left = points
    for lot in lots:
        take = min(lot.remaining, left)
        if take > 0:
            lot.remaining -= take
            records.append(_book(tx, member, kind, -take, lot.id, ref))
            left -= take
    if left > 0:
        records.append(_book(tx, member, kind, -left, None, ref))
    return records


def pay_back_then_credit(
    tx: Tx, member: Member, points: int, kind: str, ref: str
) -> list[EntryRecord]:
    """Credits ``points``: an overdraft (a negative balance) is paid back first, by an entry
    with no lot, and only the rest opens a lot the member can spend."""
    owed = max(0, -member.balance)
    records = []
    if owed:
        records.append(_book(tx, member, kind, min(owed, points), None, ref))
    if points > owed:
        records.append(credit(tx, member, points - owed, kind, ref))
    return records


def expire_lot(tx: Tx, member: Member, lot: PointsLot, at: datetime) -> EntryRecord:
    """Writes off what is left of an expired lot."""
    points = lot.remaining
    lot.remaining = 0
    entry = LedgerEntry(
        id=tx.new_id(),
        member_id=member.id,
        kind="expiry",
        points=-points,
        lot_id=lot.id,
        ref=f"expired:{lot.expires_at.date().isoformat()}",
        store_id=tx.app.store_id,
        device_id=tx.app.device_id,
        created_at=at,
    )
    tx.session.add(entry)
    member.balance -= points
    member.updated_at = at
    return _record(tx, entry)
