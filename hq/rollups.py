"""The reports' rollups of the central ledger, kept in the transaction that writes the ledger.

Every HQ code path that stores ledger entries or members (the devices' events,
:mod:`hq.ledger`; an import, :mod:`hq.importer`; a merge, :mod:`hq.merges`) adds what it
stores to a :class:`Rollup` in the process, then :meth:`Rollup.write` adds the sums to the
rollup tables with one upsert a table (``INSERT ... ON CONFLICT DO UPDATE SET n = n +
excluded.n``). The database adds, so two HQ workers storing at once cannot lose each other's
increments, and the tables and keys go in one order (:data:`ROLLUP_TABLES`, keys sorted), so
they cannot deadlock on them either. The devices' events write theirs last, just before the
chain's numbers are taken (:meth:`hq.ledger.CentralLedger.number`), the chain's rows last of
all: every writer of the day takes those in turn, as it takes the counter, so they are held
no longer than the counter is. An import or a merge writes them just before its stores'
feed numbers, in the same order.

What is kept (days are UTC days):

- ``hq_rollup_points``: per day of the entry, store of the entry and tier of the member when
  HQ stored it (``hq_entry.tier``), the points of each kind of entry summed as booked (a
  debit negative), the number of entries and of check-ins.
- ``hq_rollup_gift``: per day, store and sku of a ``gift.redeemed`` event: 1 redemption, its
  quantity and the points its ``redemption`` entries took; of a ``gift.voucher_lapsed``
  event: 1 lapsed voucher and the points its ``voucher_return`` entries gave back.
- ``hq_rollup_member``: per day and home store, the members who joined (registered, or
  imported; a member HQ knows only from entries joins when their registration arrives) and
  who departed (erased on request: the day of the erasure, or of the registration if that
  came later; merged into another record: the day of the merge).
- The same summed by month (``hq_rollup_points_month``, ``hq_rollup_gift_month``: a row a
  month, store and tier or sku, for the reports by store over whole months) and for the whole
  chain (``hq_rollup_points_chain`` by day and tier, ``hq_rollup_gift_chain`` by day and sku,
  ``hq_rollup_member_chain`` by day), so that no report reads more than a few tens of
  thousands of rows for a year.

:func:`rebuild_rollups` works them all out again from the ledger, the events and the
members (``kiosk hq reports rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.orm import Session

from hq.audit import Actor, record
from hq.feeds import UNKNOWN_TIER
from hq.models import (
    CentralEntry,
    CentralMember,
    ChainGiftRollup,
    ChainMemberRollup,
    ChainPointsRollup,
    GiftMonthRollup,
    GiftRollup,
    MemberMerge,
    MemberRollup,
    PointsMonthRollup,
    PointsRollup,
    StoredEvent,
)

KIND_COLUMNS = (
    "purchase",
    "checkin",
    "birthday",
    "referral",
    "redemption",
    "expiry",
    "refund",
    "adjustment",
    "voucher_return",
    "opening",
    "merge_in",
    "merge_out",
)
"""The kinds of entry with a column of their own; any other kind is summed in ``other``."""

POINT_MEASURES = ("entries", "checkins", *KIND_COLUMNS, "other")
_KIND_INDEX = {kind: 2 + n for n, kind in enumerate(KIND_COLUMNS)}
_OTHER = len(POINT_MEASURES) - 1
GIFT_MEASURES = ("redemptions", "quantity", "points", "lapsed", "returned")
MEMBER_MEASURES = ("joined", "departed")
ROLLUP_TABLES = (
    PointsRollup,
    PointsMonthRollup,
    GiftRollup,
    GiftMonthRollup,
    MemberRollup,
    ChainPointsRollup,
    ChainGiftRollup,
    ChainMemberRollup,
)
"""Every rollup table, in the order a transaction writes them (and so locks their rows)."""
REDEEMED = "gift.redeemed"
LAPSED = "gift.voucher_lapsed"
DELETED = "member.deleted"


def utc_day(at: datetime) -> date:
    """The UTC day of an aware time."""
    return (at.astimezone(UTC) if at.utcoffset() else at).date()


def _regroup(
    rows: dict[Any, list[Any]], key: Callable[[Any], Any], named: bool = False
) -> dict[Any, list[Any]]:
    """``rows`` summed again under coarser keys; ``named``: the first figure is a name, of
    which the greatest is kept."""
    out: dict[Any, list[Any]] = {}
    first = 1 if named else 0
    for k, row in rows.items():
        into = out.get(key(k))
        if into is None:
            out[key(k)] = list(row)
            continue
        if named and row[0] > into[0]:
            into[0] = row[0]
        for n in range(first, len(row)):
            into[n] += row[n]
    return out


@dataclass
class Rollup:
    """What one transaction adds to the rollups, summed in the process first."""

    points: dict[tuple[date, str, str], list[int]] = field(default_factory=dict)
    gifts: dict[tuple[date, str, str], list[int]] = field(default_factory=dict)
    gift_names: dict[tuple[date, str, str], str] = field(default_factory=dict)
    members: dict[tuple[date, str], list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.points or self.gifts or self.members)

    def entry(self, at: datetime, store_id: str, tier: str, kind: str, points: int) -> None:
        """A ledger entry stored."""
        key = (utc_day(at), store_id, tier)
        row = self.points.get(key)
        if row is None:
            row = self.points[key] = [0] * len(POINT_MEASURES)
        row[0] += 1
        if kind == "checkin":
            row[1] += 1
        row[_KIND_INDEX.get(kind, _OTHER)] += points

    def _gift(
        self, at: datetime, store_id: str, sku: str
    ) -> tuple[tuple[date, str, str], list[int]]:
        key = (utc_day(at), store_id, sku)
        row = self.gifts.get(key)
        if row is None:
            row = self.gifts[key] = [0] * len(GIFT_MEASURES)
        return key, row

    def redeemed(
        self, at: datetime, store_id: str, sku: str, name: str, quantity: int, points: int
    ) -> None:
        """A ``gift.redeemed`` event stored: ``points`` is what its entries took (positive)."""
        key, row = self._gift(at, store_id, sku)
        row[0] += 1
        row[1] += quantity
        row[2] += points
        if name > self.gift_names.get(key, ""):
            self.gift_names[key] = name

    def lapsed(self, at: datetime, store_id: str, sku: str, returned: int) -> None:
        """A ``gift.voucher_lapsed`` event stored, with the points its entries gave back."""
        _, row = self._gift(at, store_id, sku)
        row[3] += 1
        row[4] += returned

    def _member(self, at: datetime, store_id: str) -> list[int]:
        key = (utc_day(at), store_id)
        row = self.members.get(key)
        if row is None:
            row = self.members[key] = [0, 0]
        return row

    def joined(self, at: datetime, store_id: str) -> None:
        self._member(at, store_id)[0] += 1

    def departed(self, at: datetime, store_id: str) -> None:
        self._member(at, store_id)[1] += 1

    def write(self, session: Session) -> None:
        """Adds the sums to the rollup tables, one statement a table, in the order of
        :data:`ROLLUP_TABLES` (keys in order): the stores' (by day, by month) first, the
        chain's last, as close to the commit as the caller puts this, since every writer of
        the day takes the chain's rows in turn."""
        if not self:
            return
        conn = session.connection()
        points, gifts = POINT_MEASURES, ("name", *GIFT_MEASURES)
        named = {k: [self.gift_names.get(k, ""), *v] for k, v in self.gifts.items()}
        if self.points:
            _add(conn, PointsRollup, ("day", "store_id", "tier"), points, self.points)
            by_month = _regroup(self.points, lambda k: (k[0].replace(day=1), k[1], k[2]))
            _add(conn, PointsMonthRollup, ("month", "store_id", "tier"), points, by_month)
        if named:
            _add(conn, GiftRollup, ("day", "store_id", "sku"), gifts, named)
            by_month = _regroup(named, lambda k: (k[0].replace(day=1), k[1], k[2]), named=True)
            _add(conn, GiftMonthRollup, ("month", "store_id", "sku"), gifts, by_month)
        if self.members:
            _add(conn, MemberRollup, ("day", "store_id"), MEMBER_MEASURES, self.members)
        if self.points:
            chain = _regroup(self.points, lambda k: (k[0], k[2]))
            _add(conn, ChainPointsRollup, ("day", "tier"), points, chain)
        if named:
            chain = _regroup(named, lambda k: (k[0], k[2]), named=True)
            _add(conn, ChainGiftRollup, ("day", "sku"), gifts, chain)
        if self.members:
            chain = _regroup(self.members, lambda k: (k[0],))
            _add(conn, ChainMemberRollup, ("day",), MEMBER_MEASURES, chain)


_statements: dict[tuple[str, str], str] = {}


def _add(
    conn: Connection,
    model: type[Any],
    keys: tuple[str, ...],
    measures: tuple[str, ...],
    rows: dict[Any, list[Any]],
) -> None:
    """Upserts ``rows`` (``{key: [measure values]}``) into the model's table, adding each
    measure to what is there (``name``, the one text measure, keeps the greater). On
    PostgreSQL one statement of arrays (its text and plan the same whatever the number of
    rows); on SQLite, in the process, an executemany of plain tuples."""
    table = cast(Table, model.__table__)
    listed = sorted(rows)
    names = (*keys, *measures)
    postgresql = conn.dialect.name == "postgresql"
    statement = _statements.get((conn.dialect.name, table.name))
    if statement is None:
        greatest = "GREATEST" if postgresql else "max"
        updates = ", ".join(
            f"{m} = {greatest}({table.name}.{m}, excluded.{m})"
            if m == "name"
            else f"{m} = {table.name}.{m} + excluded.{m}"
            for m in measures
        )
        if postgresql:
            values = "SELECT * FROM unnest({})".format(
                ", ".join(
                    f"CAST(:c{n} AS {_pg_array(table, name, conn)})" for n, name in enumerate(names)
                )
            )
        else:
            values = "VALUES ({})".format(", ".join("?" for _ in names))
        statement = (
            f"INSERT INTO {table.name} ({', '.join(names)}) {values} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )
        _statements[(conn.dialect.name, table.name)] = statement
    if postgresql:
        params: dict[str, list[Any]] = {}
        for n in range(len(keys)):
            params[f"c{n}"] = [key[n] for key in listed]
        for n in range(len(measures)):
            params[f"c{len(keys) + n}"] = [rows[key][n] for key in listed]
        conn.execute(text(statement), params)
        return
    conn.exec_driver_sql(
        statement,
        [
            tuple(v.isoformat() if isinstance(v, date) else v for v in key) + tuple(rows[key])
            for key in listed
        ],
    )


def _pg_array(table: Table, name: str, conn: Connection) -> str:
    compiled = table.c[name].type.compile(dialect=conn.dialect)
    return compiled.split("(", maxsplit=1)[0].strip().lower() + "[]"


# ------------------------------------------------------------------ rebuilding


@dataclass(frozen=True)
class RebuildReport:
    """What :func:`rebuild_rollups` read and wrote."""

    entries: int
    events: int
    points_rows: int
    gift_rows: int
    member_rows: int
    outstanding_before: int
    outstanding: int
    members_before: int
    members: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _day(conn: Connection, column: str) -> str:
    return f"CAST({column} AS date)" if conn.dialect.name == "postgresql" else f"date({column})"


def _data(conn: Connection, key: str) -> str:
    """A field of a stored event's data (``ev.payload``), as text (SQLite: as stored)."""
    if conn.dialect.name == "postgresql":
        return f"(CAST(ev.payload AS json) -> 'data' ->> '{key}')"
    return f"json_extract(ev.payload, '$.data.{key}')"


def _kind_sums() -> str:
    listed = ", ".join(f"'{k}'" for k in KIND_COLUMNS)
    sums = ", ".join(
        f"SUM(CASE WHEN e.kind = '{k}' THEN e.points ELSE 0 END)" for k in KIND_COLUMNS
    )
    return (
        f"COUNT(*), SUM(CASE WHEN e.kind = 'checkin' THEN 1 ELSE 0 END), {sums}, "
        f"SUM(CASE WHEN e.kind NOT IN ({listed}) THEN e.points ELSE 0 END)"
    )


def _adding(conn: Connection, table: str, keys: Sequence[str], measures: Sequence[str]) -> str:
    """The upsert clause that adds each measure to the row there (``name`` keeps the greater)."""
    greatest = "GREATEST" if conn.dialect.name == "postgresql" else "max"
    updates = ", ".join(
        f"{m} = {greatest}({table}.{m}, excluded.{m})"
        if m == "name"
        else f"{m} = {table}.{m} + excluded.{m}"
        for m in measures
    )
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"


def _derive(conn: Connection) -> None:
    """The month and chain rollups summed from the day rollups (empty before)."""
    if conn.dialect.name == "postgresql":
        month = "CAST(date_trunc('month', day) AS date)"
    else:
        month = "date(day, 'start of month')"
    points = ", ".join(POINT_MEASURES)
    gifts = "name, " + ", ".join(GIFT_MEASURES)
    for table, keys, measures, source, grouped in (
        ("hq_rollup_points_month", "month, store_id, tier", points, "hq_rollup_points",
         f"{month}, store_id, tier"),
        ("hq_rollup_points_chain", "day, tier", points, "hq_rollup_points", "day, tier"),
        ("hq_rollup_gift_month", "month, store_id, sku", gifts, "hq_rollup_gift",
         f"{month}, store_id, sku"),
        ("hq_rollup_gift_chain", "day, sku", gifts, "hq_rollup_gift", "day, sku"),
        ("hq_rollup_member_chain", "day", "joined, departed", "hq_rollup_member", "day"),
    ):  # fmt: skip
        totals = ", ".join(
            f"MAX({m})" if m == "name" else f"SUM({m})" for m in measures.split(", ")
        )
        conn.execute(
            text(
                f"INSERT INTO {table} ({keys}, {measures}) SELECT {grouped}, {totals} "
                f"FROM {source} GROUP BY {grouped}"
            )
        )


def outstanding_points(session: Session) -> int:
    """The points the members hold, from the chain's rollup (a row a day and tier)."""
    total = sum(getattr(ChainPointsRollup, c) for c in (*KIND_COLUMNS, "other"))
    return int(session.scalar(select(func.coalesce(func.sum(total), 0))) or 0)


def member_count(session: Session) -> int:
    """The chain's members: all who joined, less those who departed (a row a day)."""
    return int(
        session.scalar(
            select(
                func.coalesce(func.sum(ChainMemberRollup.joined - ChainMemberRollup.departed), 0)
            )
        )
        or 0
    )


def _next_chunk(conn: Connection, after: str, chunk: int) -> tuple[str, int] | None:
    """The id that ends the next ``chunk`` entries after ``after`` (in id order, which the
    primary key reads), and how many they are; None when none is left."""
    last = conn.execute(
        select(CentralEntry.id)
        .where(CentralEntry.id > after)
        .order_by(CentralEntry.id)
        .offset(chunk - 1)
        .limit(1)
    ).scalar()
    if last is not None:
        return str(last), chunk
    last, count = conn.execute(
        select(func.max(CentralEntry.id), func.count()).where(CentralEntry.id > after)
    ).one()
    return None if last is None else (str(last), int(count))


def rebuild_rollups(
    session: Session,
    actor: Actor,
    now: datetime,
    advance: Callable[[int], None] = lambda n: None,
    chunk: int = 200_000,
    started: Callable[[int], None] = lambda total: None,
) -> RebuildReport:
    """Works every rollup out again from the ledger, the stored events and the members, in
    the caller's transaction, and records it in HQ's audit log.

    On PostgreSQL the rollup tables are locked first (reports read on meanwhile): a worker
    storing events waits at its rollups until the rebuild commits, then adds to the rebuilt
    rows what the rebuild did not see, so nothing is counted twice or lost. ``started``
    hears how many rows (entries and events) will be read, ``advance`` each chunk read.
    """
    conn = session.connection()
    outstanding_before, members_before = outstanding_points(session), member_count(session)
    if conn.dialect.name == "postgresql":
        names = ", ".join(cast(Table, m.__table__).name for m in ROLLUP_TABLES)
        conn.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    for model in ROLLUP_TABLES:
        conn.execute(cast(Table, model.__table__).delete())
    entries = int(conn.execute(select(func.count()).select_from(CentralEntry)).scalar() or 0)
    low, high = conn.execute(
        select(func.min(StoredEvent.hq_seq), func.max(StoredEvent.hq_seq))
    ).one()
    events = 0 if low is None else int(high) - int(low) + 1
    started(entries + events)

    points_keys = ("day", "store_id", "tier")
    gift_keys = ("day", "store_id", "sku")
    tier = "COALESCE(e.tier, (SELECT m.tier FROM hq_member m WHERE m.id = e.member_id), 'unknown')"
    points_sql = text(
        f"INSERT INTO hq_rollup_points (day, store_id, tier, {', '.join(POINT_MEASURES)}) "
        f"SELECT {_day(conn, 'e.at')}, e.store_id, {tier}, {_kind_sums()} FROM hq_entry e "
        "WHERE e.id > :after AND e.id <= :last GROUP BY 1, 2, 3 "
        + _adding(conn, "hq_rollup_points", points_keys, POINT_MEASURES)
    )
    gift_points_sql = text(
        "INSERT INTO hq_rollup_gift (day, store_id, sku, name, redemptions, quantity, points, "
        f"lapsed, returned) SELECT {_day(conn, 'ev.at')}, ev.store_id, "
        f"COALESCE({_data(conn, 'sku')}, ''), '', 0, 0, "
        "SUM(CASE WHEN e.kind = 'redemption' THEN -e.points ELSE 0 END), 0, "
        "SUM(CASE WHEN e.kind = 'voucher_return' THEN e.points ELSE 0 END) "
        "FROM hq_entry e JOIN hq_event ev ON ev.event_id = e.event_id "
        "WHERE e.id > :after AND e.id <= :last AND e.kind IN ('redemption', 'voucher_return') "
        f"AND ((e.kind = 'redemption' AND ev.kind = '{REDEEMED}') "
        f"OR (e.kind = 'voucher_return' AND ev.kind = '{LAPSED}')) GROUP BY 1, 2, 3 "
        + _adding(conn, "hq_rollup_gift", gift_keys, GIFT_MEASURES)
    )
    after = ""
    while (found := _next_chunk(conn, after, chunk)) is not None:
        last, count = found
        bounds = {"after": after, "last": last}
        conn.execute(points_sql, bounds)
        conn.execute(gift_points_sql, bounds)
        advance(count)
        after = last

    quantity = _data(conn, "qty")
    if conn.dialect.name == "postgresql":
        quantity = f"CAST({quantity} AS bigint)"
    gift_events_sql = text(
        "INSERT INTO hq_rollup_gift (day, store_id, sku, name, redemptions, quantity, points, "
        f"lapsed, returned) SELECT {_day(conn, 'ev.at')}, ev.store_id, "
        f"COALESCE({_data(conn, 'sku')}, ''), MAX(COALESCE({_data(conn, 'name')}, '')), "
        f"SUM(CASE WHEN ev.kind = '{REDEEMED}' THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN ev.kind = '{REDEEMED}' THEN COALESCE({quantity}, 0) ELSE 0 END), 0, "
        f"SUM(CASE WHEN ev.kind = '{LAPSED}' THEN 1 ELSE 0 END), 0 "
        "FROM hq_event ev WHERE ev.hq_seq >= :low AND ev.hq_seq < :high "
        f"AND ev.kind IN ('{REDEEMED}', '{LAPSED}') GROUP BY 1, 2, 3 "
        + _adding(conn, "hq_rollup_gift", gift_keys, ("name", *GIFT_MEASURES))
    )
    erasures_sql = text(
        f"SELECT {_data(conn, 'member_id')}, ev.at FROM hq_event ev "
        f"WHERE ev.hq_seq >= :low AND ev.hq_seq < :high AND ev.kind = '{DELETED}'"
    )
    erased: dict[str, datetime] = {}
    if low is not None:
        for start in range(int(low), int(high) + 1, chunk):
            seqs = {"low": start, "high": min(start + chunk, int(high) + 1)}
            conn.execute(gift_events_sql, seqs)
            for member_id, at in conn.execute(erasures_sql, seqs).tuples():
                when = _aware(at)
                if member_id is not None and (member_id not in erased or when < erased[member_id]):
                    erased[str(member_id)] = when
            advance(seqs["high"] - seqs["low"])

    conn.execute(
        text(
            "INSERT INTO hq_rollup_member (day, store_id, joined, departed) "
            f"SELECT {_day(conn, 'created_at')}, store_id, COUNT(*), 0 FROM hq_member "
            f"WHERE tier <> '{UNKNOWN_TIER}' GROUP BY 1, 2"
        )
    )
    gone = Rollup()
    for at, store_id in session.execute(
        select(MemberMerge.at, CentralMember.store_id).join(
            CentralMember, CentralMember.id == MemberMerge.absorbed_member_id
        )
    ).tuples():
        gone.departed(at, store_id)
    for member in _erased_members(session, erased):
        gone.departed(max(member.created_at, erased[member.id]), member.store_id)
    if gone.members:
        _add(conn, MemberRollup, ("day", "store_id"), MEMBER_MEASURES, gone.members)
    _derive(conn)

    def rows(model: type[Any]) -> int:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)

    report = RebuildReport(
        entries=entries,
        events=events,
        points_rows=rows(PointsRollup),
        gift_rows=rows(GiftRollup),
        member_rows=rows(MemberRollup),
        outstanding_before=outstanding_before,
        outstanding=outstanding_points(session),
        members_before=members_before,
        members=member_count(session),
    )
    record(
        session,
        actor,
        "reports.rebuild",
        "rollups",
        now,
        before={"outstanding": outstanding_before, "members": members_before},
        after={
            "outstanding": report.outstanding,
            "members": report.members,
            "entries": entries,
            "events": events,
        },
    )
    return report


def _aware(at: datetime | str) -> datetime:
    """A time a raw statement returned (SQLite: its text), as an aware UTC time."""
    value = datetime.fromisoformat(at) if isinstance(at, str) else at
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _erased_members(session: Session, erased: dict[str, datetime]) -> Iterable[CentralMember]:
    """The members an erasure took out of the chain: erased, not merged away before, and
    registered (not known only from entries)."""
    listed = sorted(erased)
    for start in range(0, len(listed), 900):
        yield from session.scalars(
            select(CentralMember).where(
                CentralMember.id.in_(listed[start : start + 900]),
                CentralMember.deleted.is_(True),
                CentralMember.merged_into.is_(None),
                CentralMember.tier != UNKNOWN_TIER,
            )
        )
