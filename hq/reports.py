"""HQ's reports over the central ledger, for a range of UTC days and optionally one store.

Each report reads the rollups the ledger keeps as events arrive (:mod:`hq.rollups`), never
the ledger itself: a year's report of a chain of 10 million entries answers in milliseconds,
by store or by gift in a few hundred (``bench.reports``). The console's
pages and ``kiosk hq report`` call the same functions; each returns a :class:`Report` whose
rows (frozen dataclasses) make a table (:meth:`Report.table`, :meth:`Report.csv`) and chart
series (:meth:`Report.series`).

What they count (every figure an integer of points or a count; a day is a UTC day; a
store is the store where the entry was booked, a tier the member's tier when HQ stored it):

- ``points``: per day (and/or store, tier), the points **issued** (earned: ``purchase``,
  ``checkin``, ``birthday`` and ``referral`` entries, also shown apart), **redeemed**
  (``redemption``, for gifts and coupons), **expired** (``expiry``), **refunded** (taken back
  with a refund, ``refund``), **returned** (a lapsed gift voucher's points given back,
  ``voucher_return``), **adjusted** (staff's ``adjustment`` entries, signed), **opening**
  (balances imported from the chain's earlier system), **merged** (``merge_in`` and
  ``merge_out`` of merged member records: nothing for the chain as a whole), **other** (a
  kind HQ does not know), and **net**: every entry's points, so ``net = issued - redeemed -
  expired - refunded + returned + adjusted + opening + merged + other``.
- ``outstanding``: the points the members hold, the chain's points liability: the running
  sum of every entry's points up to the end of each day. At the end of today it is the sum of
  the members' balances (each balance is the sum of its member's entries). For one store: the
  running sum of the points booked at that store.
- ``gifts``: per gift or coupon (sku) and store (and/or day), the redemptions (``gift.redeemed``
  events), their quantity and the points they took; the vouchers that lapsed uncollected
  (``gift.voucher_lapsed``) and the points those gave back.
- ``members``: per day, the members who joined (registered at a kiosk, or imported; a member
  HQ knows only from entries joins when the registration arrives), who departed (erased on
  request, or merged into another record), and the running total. For one store: its home
  members.
- ``checkins``: per day (and/or store), the daily check-ins (``checkin`` entries) and the
  points they gave.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import BigInteger, ColumnElement, and_, cast, func, or_, select, union_all
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound
from hq.models import (
    ChainGiftRollup,
    ChainMemberRollup,
    ChainPointsRollup,
    EnrolledDevice,
    FleetDevice,
    GiftMonthRollup,
    GiftRollup,
    MemberRollup,
    PointsMonthRollup,
    PointsRollup,
)
from hq.rollups import KIND_COLUMNS, POINT_MEASURES

MAX_DAYS = 3660  # ten years: a longer range is a typo
DAY, STORE, TIER = "day", "store", "tier"
_COLUMN_OF = {DAY: "day", STORE: "store_id", TIER: "tier"}


@dataclass(frozen=True)
class Period:
    """The UTC days from ``start`` to ``end``, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> Iterator[date]:
        for n in range(self.days):
            yield self.start + timedelta(days=n)


def parse_day(text: str, what: str) -> date:
    """A day typed as YYYY-MM-DD.

    Raises:
        InvalidInput: anything else, or a day that does not exist.
    """
    value = text.strip()
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{what} must be a day as YYYY-MM-DD, not {value[:40]!r}", code="bad_date"
        ) from None


def period(start: str | None, end: str | None, today: date | None = None) -> Period:
    """The period typed as ``--from`` and ``--to`` (both included); ``--to`` defaults to today
    (UTC), ``--from`` to 29 days before ``--to`` (30 days).

    Raises:
        InvalidInput: a bad day, ``--from`` after ``--to``, or more than :data:`MAX_DAYS`.
    """
    last = parse_day(end, "--to") if end else (today or datetime.now(UTC).date())
    first = parse_day(start, "--from") if start else last - timedelta(days=29)
    return make_period(first, last)


def make_period(start: date, end: date) -> Period:
    """:class:`Period`, checked.

    Raises:
        InvalidInput: ``start`` after ``end``, or more than :data:`MAX_DAYS` days.
    """
    if start > end:
        raise InvalidInput(f"the range starts ({start}) after it ends ({end})", code="bad_range")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(
            f"a report covers at most {MAX_DAYS} days, not {(end - start).days + 1} "
            f"({start} to {end})",
            code="bad_range",
        )
    return Period(start, end)


# ------------------------------------------------------------------ rows


@dataclass(frozen=True)
class PointsRow:
    """The points of a day, store and tier, or of whichever of them the report is by (the
    others None). See the module's description for what each figure counts."""

    MEASURES: ClassVar[tuple[str, ...]] = (
        "issued", "purchase", "checkin", "birthday", "referral", "redeemed", "expired",
        "refunded", "returned", "adjusted", "opening", "merged", "other", "net", "entries",
    )  # fmt: skip

    day: date | None
    store_id: str | None
    tier: str | None
    issued: int
    purchase: int
    checkin: int
    birthday: int
    referral: int
    redeemed: int
    expired: int
    refunded: int
    returned: int
    adjusted: int
    opening: int
    merged: int
    other: int
    net: int
    entries: int

    @classmethod
    def of(
        cls, day: date | None, store_id: str | None, tier: str | None, sums: Sequence[int]
    ) -> PointsRow:
        """From the rollups' sums, in the order of :data:`hq.rollups.POINT_MEASURES`."""
        (entries, _checkins, purchase, checkin, birthday, referral, redemption, expiry, refund,
         adjustment, voucher_return, opening, merge_in, merge_out, other) = sums  # fmt: skip
        return cls(
            day, store_id, tier,
            issued=purchase + checkin + birthday + referral,
            purchase=purchase, checkin=checkin, birthday=birthday, referral=referral,
            redeemed=-redemption, expired=-expiry, refunded=-refund, returned=voucher_return,
            adjusted=adjustment, opening=opening, merged=merge_in + merge_out, other=other,
            net=sum(sums[2:]), entries=entries,
        )  # fmt: skip


@dataclass(frozen=True)
class OutstandingRow:
    """A day's net points (every entry's) and the points outstanding at its end."""

    MEASURES: ClassVar[tuple[str, ...]] = ("net", "outstanding")

    day: date
    net: int
    outstanding: int


@dataclass(frozen=True)
class GiftRow:
    """A gift's (or coupon's) redemptions and lapsed vouchers, per store and/or day when the
    report is by them. ``name`` is one the gift had in the range."""

    MEASURES: ClassVar[tuple[str, ...]] = (
        "redemptions", "quantity", "points", "lapsed", "returned",
    )  # fmt: skip

    day: date | None
    store_id: str | None
    sku: str
    name: str
    redemptions: int
    quantity: int
    points: int
    lapsed: int
    returned: int


@dataclass(frozen=True)
class MemberRow:
    """A day's members who joined and departed, and the members at its end."""

    MEASURES: ClassVar[tuple[str, ...]] = ("joined", "departed", "total")

    day: date
    joined: int
    departed: int
    total: int


@dataclass(frozen=True)
class CheckinRow:
    """The daily check-ins of a day and/or store, and the points they gave."""

    MEASURES: ClassVar[tuple[str, ...]] = ("checkins", "points")

    day: date | None
    store_id: str | None
    checkins: int
    points: int


R = TypeVar("R", PointsRow, OutstandingRow, GiftRow, MemberRow, CheckinRow)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Report(Generic[R]):
    """A report's rows with what they are of: a table (``columns`` of each row) and chart
    series (:meth:`series`)."""

    name: str
    period: Period
    store_id: str | None
    by: tuple[str, ...]
    columns: tuple[str, ...]
    rows: list[R]

    def table(self) -> list[list[Any]]:
        """The rows as lists of ``columns``' values."""
        return [[getattr(row, c) for c in self.columns] for row in self.rows]

    def csv(self) -> str:
        """The table as CSV with a header line (days as YYYY-MM-DD)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for values in self.table():
            writer.writerow([_text(v) for v in values])
        return out.getvalue()

    def series(self, measure: str, x: str | None = None) -> dict[str, list[tuple[Any, int]]]:
        """``measure`` along ``x`` (by default the day, else the first column), one series a
        value of the other dimension columns (the label joins them; "" when there are none):
        what a chart draws.

        Raises:
            InvalidInput: no such measure or column in this report.
        """
        row_type = type(self.rows[0]) if self.rows else None
        dimensions = [c for c in self.columns if row_type is None or c not in row_type.MEASURES]
        if measure not in self.columns or measure in dimensions:
            raise InvalidInput(f"the {self.name} report has no figure {measure!r}")
        along = x or (DAY if DAY in dimensions else (dimensions[0] if dimensions else ""))
        if along not in dimensions:
            raise InvalidInput(f"the {self.name} report has no column {along!r} to draw along")
        split = [c for c in dimensions if c not in (along, "name")]
        out: dict[str, list[tuple[Any, int]]] = {}
        for row in self.rows:
            label = " ".join(_text(getattr(row, c)) for c in split)
            out.setdefault(label, []).append((getattr(row, along), getattr(row, measure)))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "from": self.period.start.isoformat(),
            "to": self.period.end.isoformat(),
            "store_id": self.store_id,
            "by": list(self.by),
            "columns": list(self.columns),
            "rows": [
                {
                    c: _text(v) if isinstance(v, date) else v
                    for c, v in zip(self.columns, values, strict=True)
                }
                for values in self.table()
            ],
        }


def _columns(row_type: type[Any], by: Sequence[str], extra: Sequence[str] = ()) -> tuple[str, ...]:
    dims = [_COLUMN_OF[d] for d in (DAY, STORE, TIER) if d in by]
    return (*dims, *extra, *row_type.MEASURES)


def _by(by: Sequence[str], allowed: Sequence[str], report: str) -> tuple[str, ...]:
    """``by`` in the canonical order (day, store, tier), checked against ``allowed``."""
    unknown = [d for d in by if d not in allowed]
    if unknown:
        choices = ", ".join(allowed)
        raise InvalidInput(
            f"the {report} report is by {choices} or none of them, not {', '.join(unknown)}",
            code="bad_grouping",
        )
    return tuple(d for d in (DAY, STORE, TIER) if d in by)


def _int(value: Any) -> int:
    return int(value or 0)


def _sum(column: Any) -> Any:
    """The sum of a column as a bigint (PostgreSQL sums bigints as numeric, which the driver
    makes Decimals of: slower to fetch, and not ints)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


# ------------------------------------------------------------------ where the rows come from


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def whole_months(period: Period) -> tuple[tuple[date, date] | None, list[tuple[date, date]]]:
    """The whole months in the period (the first days of the first and the last), and the
    days before and after them (ranges of days, both ends included)."""
    first = period.start if period.start.day == 1 else _next_month(period.start)
    after = period.end + timedelta(days=1)
    beyond = after if after.day == 1 else after.replace(day=1)  # the month after the last
    if first >= beyond:
        return None, [(period.start, period.end)]
    edges = []
    if period.start < first:
        edges.append((period.start, first - timedelta(days=1)))
    if beyond <= period.end:
        edges.append((beyond, period.end))
    last = (beyond - timedelta(days=1)).replace(day=1)
    return (first, last), edges


def _source(
    period: Period,
    store_id: str | None,
    by: tuple[str, ...],
    tables: tuple[Any, Any, Any],
    columns: Sequence[str],
) -> Any:
    """The rollup rows a report sums, as a subquery with ``columns`` (and ``day`` and
    ``store_id`` when the report is by them): of the chain (a row a day) when the report is
    neither by store nor of one; else of the stores, a row a day when the report is by day,
    otherwise a row a month for the period's whole months and a row a day for the days
    around them. ``tables``: the rollups by day, by month and of the chain."""
    by_day, by_month, of_chain = tables
    if store_id is None and STORE not in by:
        return (
            select(of_chain.day, *(getattr(of_chain, c) for c in columns))
            .where(of_chain.day >= period.start, of_chain.day <= period.end)
            .subquery()
        )

    def rows(model: Any, time: Any, spans: list[tuple[date, date]], day: bool) -> Any:
        query = select(*([model.day] if day else []), model.store_id).add_columns(
            *(getattr(model, c) for c in columns)
        )
        query = query.where(or_(*(and_(time >= a, time <= b) for a, b in spans)))
        return query if store_id is None else query.where(model.store_id == store_id)

    if DAY in by:
        return rows(by_day, by_day.day, [(period.start, period.end)], True).subquery()
    months, edges = whole_months(period)
    parts = [rows(by_day, by_day.day, edges, False)] if edges else []
    if months is not None:
        parts.append(rows(by_month, by_month.month, [months], False))
    return (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()


# ------------------------------------------------------------------ reports


def points_report(
    session: Session, period: Period, store_id: str | None = None, by: Sequence[str] = (DAY,)
) -> Report[PointsRow]:
    """Points issued, redeemed, expired, ... per day, store and/or tier (``by``; none of
    them: the period's totals). By day alone, every day of the period has its row."""
    by = _by(by, (DAY, STORE, TIER), "points")
    tables = (PointsRollup, PointsMonthRollup, ChainPointsRollup)
    source = _source(period, store_id, by, tables, ("tier", *POINT_MEASURES))
    dims: list[Any] = [source.c[_COLUMN_OF[d]] for d in by]
    query = (
        select(*dims, *(_sum(source.c[m]) for m in POINT_MEASURES)).group_by(*dims).order_by(*dims)
    )
    width = len(by)
    day_at, store_at, tier_at = (by.index(d) if d in by else None for d in (DAY, STORE, TIER))
    rows = [
        PointsRow.of(
            None if day_at is None else found[day_at],
            None if store_at is None else found[store_at],
            None if tier_at is None else found[tier_at],
            found[width:],
        )
        for found in session.connection().execute(query).tuples().all()
    ]
    if by == (DAY,):
        have = {row.day: row for row in rows}
        zero = [0] * len(POINT_MEASURES)
        rows = [have.get(d) or PointsRow.of(d, None, None, zero) for d in period.each_day()]
    return Report("points", period, store_id, by, _columns(PointsRow, by), rows)


def _net(source: Any) -> ColumnElement[Any]:
    """The points of every kind of a rollup row (an expression)."""
    total: ColumnElement[Any] = getattr(source, KIND_COLUMNS[0])
    for kind in (*KIND_COLUMNS[1:], "other"):
        total = total + getattr(source, kind)
    return total


def outstanding_report(
    session: Session, period: Period, store_id: str | None = None
) -> Report[OutstandingRow]:
    """The points outstanding at the end of each day of the period: what was outstanding
    before it (one sum), plus each day's net points."""
    source: Any = PointsRollup if store_id is not None else ChainPointsRollup
    net = _sum(_net(source))
    before = select(net).where(source.day < period.start)
    daily = (
        select(source.day, net)
        .where(source.day >= period.start, source.day <= period.end)
        .group_by(source.day)
    )
    if store_id is not None:
        before = before.where(source.store_id == store_id)
        daily = daily.where(source.store_id == store_id)
    conn = session.connection()
    running = _int(conn.execute(before).scalar())
    nets = {day: int(v) for day, v in conn.execute(daily).tuples()}
    rows: list[OutstandingRow] = []
    for day in period.each_day():
        running += nets.get(day, 0)
        rows.append(OutstandingRow(day, nets.get(day, 0), running))
    return Report("outstanding", period, store_id, (DAY,), _columns(OutstandingRow, (DAY,)), rows)


def gifts_report(
    session: Session, period: Period, store_id: str | None = None, by: Sequence[str] = (STORE,)
) -> Report[GiftRow]:
    """Redemptions by gift (sku), and by store and/or day (``by``)."""
    by = _by(by, (DAY, STORE), "gifts")
    tables = (GiftRollup, GiftMonthRollup, ChainGiftRollup)
    source = _source(period, store_id, by, tables, ("sku", "name", *GiftRow.MEASURES))
    dims: list[Any] = [source.c[_COLUMN_OF[d]] for d in by]
    query = (
        select(
            *dims,
            source.c.sku,
            func.max(source.c.name),
            *(_sum(source.c[m]) for m in GiftRow.MEASURES),
        )
        .group_by(*dims, source.c.sku)
        .order_by(*dims, source.c.sku)
    )
    rows: list[GiftRow] = []
    for found in session.connection().execute(query).tuples().all():
        values = dict(zip(by, found[: len(by)], strict=True))
        sku, name, *sums = found[len(by) :]
        rows.append(GiftRow(values.get(DAY), values.get(STORE), sku, name or "", *sums))
    return Report("gifts", period, store_id, by, _columns(GiftRow, by, ("sku", "name")), rows)


def members_report(
    session: Session, period: Period, store_id: str | None = None
) -> Report[MemberRow]:
    """Members who joined and departed each day, and the members at its end."""
    m: Any = MemberRollup if store_id is not None else ChainMemberRollup
    before = select(_sum(m.joined - m.departed)).where(m.day < period.start)
    daily = (
        select(m.day, _sum(m.joined), _sum(m.departed))
        .where(m.day >= period.start, m.day <= period.end)
        .group_by(m.day)
    )
    if store_id is not None:
        before = before.where(m.store_id == store_id)
        daily = daily.where(m.store_id == store_id)
    conn = session.connection()
    total = _int(conn.execute(before).scalar())
    found = {day: (int(j), int(d)) for day, j, d in conn.execute(daily).tuples()}
    rows: list[MemberRow] = []
    for day in period.each_day():
        joined, departed = found.get(day, (0, 0))
        total += joined - departed
        rows.append(MemberRow(day, joined, departed, total))
    return Report("members", period, store_id, (DAY,), _columns(MemberRow, (DAY,)), rows)


def checkins_report(
    session: Session, period: Period, store_id: str | None = None, by: Sequence[str] = (DAY,)
) -> Report[CheckinRow]:
    """Daily check-ins and their points, per day and/or store (``by``): a row for each with
    check-ins; by day alone, every day of the period has its row."""
    by = _by(by, (DAY, STORE), "checkins")
    tables = (PointsRollup, PointsMonthRollup, ChainPointsRollup)
    source = _source(period, store_id, by, tables, ("checkins", "checkin"))
    dims: list[Any] = [source.c[_COLUMN_OF[d]] for d in by]
    query = (
        select(*dims, _sum(source.c.checkins), _sum(source.c.checkin))
        .group_by(*dims)
        .having(func.sum(source.c.checkins) > 0)  # a store's days of purchases alone: no row
        .order_by(*dims)
    )
    rows: list[CheckinRow] = []
    for found in session.connection().execute(query).tuples().all():
        values = dict(zip(by, found[: len(by)], strict=True))
        count, points = found[len(by) :]
        rows.append(CheckinRow(values.get(DAY), values.get(STORE), count, points))
    if by == (DAY,):
        have = {row.day: row for row in rows}
        rows = [have.get(d) or CheckinRow(d, None, 0, 0) for d in period.each_day()]
    return Report("checkins", period, store_id, by, _columns(CheckinRow, by), rows)


REPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (what it may be by, what it is by unless told)
    "points": ((DAY, STORE, TIER), (DAY,)),
    "outstanding": ((DAY,), (DAY,)),
    "gifts": ((DAY, STORE), (STORE,)),
    "members": ((DAY,), (DAY,)),
    "checkins": ((DAY, STORE), (DAY,)),
}


def known_store(session: Session, store_id: str) -> bool:
    """Whether HQ has heard of the store: a device of it, or anything of it in the rollups."""
    for column in (
        EnrolledDevice.store_id,
        FleetDevice.store_id,
        PointsRollup.store_id,
        MemberRollup.store_id,
    ):
        if session.scalar(select(column).where(column == store_id).limit(1)) is not None:
            return True
    return False


def run_report(
    session: Session,
    name: str,
    period: Period,
    store_id: str | None = None,
    by: Sequence[str] | None = None,
) -> Report[Any]:
    """The report called ``name`` (:data:`REPORTS`), by its default grouping unless ``by``.

    Raises:
        InvalidInput: no such report, or a grouping it does not have.
        NotFound: a store HQ has not heard of.
    """
    if name not in REPORTS:
        raise InvalidInput(
            f"no report {name[:40]!r}: the reports are {', '.join(REPORTS)}", code="bad_report"
        )
    allowed, default = REPORTS[name]
    grouping = _by(default if by is None else by, allowed, name)
    if allowed == (DAY,) and grouping != (DAY,):
        raise InvalidInput(f"the {name} report is by day only", code="bad_grouping")
    if store_id is not None and not known_store(session, store_id):
        raise NotFound(f"no store {store_id[:64]} at HQ", code="unknown_store")
    if name == "points":
        return points_report(session, period, store_id, grouping)
    if name == "outstanding":
        return outstanding_report(session, period, store_id)
    if name == "gifts":
        return gifts_report(session, period, store_id, grouping)
    if name == "members":
        return members_report(session, period, store_id)
    return checkins_report(session, period, store_id, grouping)
