"""HQ's reports for a year of a chain's ledger on PostgreSQL, against scanning the ledger.

    .venv/bin/python -m bench.reports [--entries 10000000] [--stores 400] [--members 300000]
                                      [--runs 5] [--url URL]

A throwaway PostgreSQL cluster (as the tests start one; ``--url`` names a database of your
own instead, whose schema must be empty) is migrated and loaded, by ``INSERT ... SELECT``
from ``generate_series`` in chunks, with a year of a chain's ledger: ``--entries`` entries
from ``--members`` members of ``--stores`` stores, of every kind (purchases, check-ins,
birthdays, referrals, redemptions, expiries, refunds, adjustments, returned vouchers), in the
order of their ids and times as HQ stores them, each redemption and returned voucher with its
event, the members' balances their entries' sum. The rollups are then worked out as ``kiosk
hq reports rebuild`` does (:func:`hq.rollups.rebuild_rollups`).

Each report of :mod:`hq.reports` for the year is then timed as the console's page calls it
(the queries, the rows fetched, the dataclasses made: the server's time before its template),
median of ``--runs``, beside the same figures scanned from the ledger by one plain GROUP BY
query (median of at most three runs), in the same run and database; each pair must agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from edge.progress import Progress
from hq.audit import Actor
from hq.reports import (
    Period,
    Report,
    checkins_report,
    gifts_report,
    make_period,
    members_report,
    outstanding_report,
    points_report,
)
from hq.rollups import rebuild_rollups
from hq.schema import upgrade
from hq.service import make_hq_engine
from tests.postgres import fresh_schema, postgres_cluster

FIRST_DAY = date(2026, 1, 1)
DAYS = 365
CHUNK = 500_000
TIERS = ("normal", "silver", "gold", "diamond")
EARNED = ("purchase", "checkin", "birthday", "referral")
# A member's tier, apart from their store (member % stores): members of every tier everywhere.
TIER_OF = "(ARRAY[{}])[1 + ({{}} / 7) % 4]".format(", ".join(f"'{t}'" for t in TIERS))

# Pseudo-random streams of the entry number i (multiplicative hashes), so the same
# arguments load the same ledger.
_H = "((:seed + g.i) * {} % 1000003)"
_KIND = (
    "CASE WHEN k < 600 THEN 'purchase' WHEN k < 720 THEN 'checkin' WHEN k < 730 THEN "
    "'birthday' WHEN k < 740 THEN 'referral' WHEN k < 860 THEN 'redemption' WHEN k < 920 "
    "THEN 'expiry' WHEN k < 950 THEN 'refund' WHEN k < 960 THEN 'adjustment' WHEN k < 970 "
    "THEN 'voucher_return' ELSE 'purchase' END"
)
_POINTS = (
    "CASE kind WHEN 'purchase' THEN 10 + v % 490 WHEN 'checkin' THEN 10 WHEN 'birthday' "
    "THEN 200 WHEN 'referral' THEN 50 WHEN 'redemption' THEN -(50 + v % 500) WHEN 'expiry' "
    "THEN -(5 + v % 95) WHEN 'refund' THEN -(5 + v % 55) WHEN 'adjustment' THEN "
    "CASE WHEN v % 2 = 0 THEN 100 ELSE -40 END ELSE 50 + v % 500 END"
)

LOAD_SQL = f"""
WITH g AS (
    SELECT i, k, v, member, at, kind, {_POINTS} AS points,
           'S' || lpad((CASE WHEN v % 10 = 0 THEN v % :stores ELSE member % :stores END)::text,
                       4, '0') AS store_id
    FROM (
        SELECT i, k, v, member, at, {_KIND} AS kind FROM (
            SELECT g.i, {_H.format(7919)} % 1000 AS k, {_H.format(104729)} AS v,
                   {_H.format(2654435761)} % :members AS member,
                   TIMESTAMP '{FIRST_DAY.isoformat()}' + (g.i::float8 / :entries)
                       * INTERVAL '{DAYS} days' AS at
            FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS g(i)
        ) AS drawn
    ) AS kinded
), entries AS (
    INSERT INTO hq_entry (id, member_id, kind, points, lot_id, ref, store_id, device_id, at,
                          event_id, available_at, expires_at, tier)
    SELECT 'E' || lpad(i::text, 25, '0'), 'M' || lpad(member::text, 25, '0'), kind, points,
           NULL, '', store_id, 'K' || store_id, at, 'V' || lpad(i::text, 25, '0'),
           NULL, NULL, {TIER_OF.format("member")}
    FROM g
)
INSERT INTO hq_event (hq_seq, event_id, device_id, store_id, device_seq, kind, at, payload,
                      received_at)
SELECT :events + row_number() OVER (ORDER BY i), 'V' || lpad(i::text, 25, '0'),
       'K' || store_id, store_id, i,
       CASE kind WHEN 'redemption' THEN 'gift.redeemed' ELSE 'gift.voucher_lapsed' END, at,
       json_build_object('data', json_build_object(
           'sku', 'G-' || lpad((v % 40)::text, 2, '0'), 'name', 'Gift ' || (v % 40),
           'qty', 1 + v % 2))::text,
       at
FROM g WHERE kind IN ('redemption', 'voucher_return')
"""

MEMBERS_SQL = f"""
INSERT INTO hq_member (id, store_id, tier, phone_masked, balance, overdraft_flagged, deleted,
                       created_at, updated_at)
SELECT 'M' || lpad(m::text, 25, '0'), 'S' || lpad((m % :stores)::text, 4, '0'),
       {TIER_OF.format("m")}, '', 0, false, false,
       TIMESTAMP '{FIRST_DAY.isoformat()}' - INTERVAL '730 days'
           + (m::float8 / :members) * INTERVAL '1095 days',
       TIMESTAMP '{FIRST_DAY.isoformat()}'
FROM generate_series(0, :members - 1) AS g(m)
"""


def load(conn: Connection, entries: int, stores: int, members: int, seed: int) -> int:
    """The chain's members and ledger (see the module's description); returns the events."""
    params = {"stores": stores, "members": members, "entries": entries, "seed": seed}
    conn.execute(text(MEMBERS_SQL), params)
    events = 0
    with Progress("loading the ledger", entries, "entries") as bar:
        for low in range(0, entries, CHUNK):
            high = min(entries, low + CHUNK) - 1
            done = conn.execute(
                text(LOAD_SQL), {**params, "low": low, "high": high, "events": events}
            )
            events += done.rowcount
            conn.commit()
            bar.advance(high - low + 1)
    conn.execute(
        text(
            "UPDATE hq_member AS m SET balance = s.total FROM (SELECT member_id, SUM(points) "
            "AS total FROM hq_entry GROUP BY member_id) AS s WHERE m.id = s.member_id"
        )
    )
    conn.execute(text("UPDATE hq_counter SET value = :n WHERE name = 'event'"), {"n": events})
    conn.commit()
    conn.execute(text("ANALYZE"))
    conn.commit()
    return events


@dataclass
class Case:
    """A report as the console calls it, and the same figures scanned from the ledger."""

    label: str
    days: Period
    export: bool  # a table of every store's every day: a CSV export, not a page
    report: Callable[[Session], Report[Any]]
    scan: str  # SQL over hq_entry, hq_event or hq_member
    figures: Callable[[Report[Any]], tuple[int, ...]]  # from the report's rows
    scanned: Callable[[list[Sequence[Any]]], tuple[int, ...]]  # from the scan's rows


def _day(column: str = "e.at") -> str:
    return f"CAST({column} AS date)"


def _points_scan(dims: Sequence[str], store: bool) -> str:
    columns = {"day": _day(), "store": "e.store_id", "tier": "e.tier"}
    listed = ", ".join(columns[d] for d in dims)
    earned = ", ".join(f"'{k}'" for k in EARNED)
    return (
        f"SELECT {listed + ', ' if listed else ''}SUM(e.points), "
        f"SUM(CASE WHEN e.kind IN ({earned}) THEN e.points ELSE 0 END) FROM hq_entry e "
        "WHERE e.at >= :start AND e.at < :after"
        + (" AND e.store_id = :store" if store else "")
        + (f" GROUP BY {listed}" if listed else "")
    )


def _sums(rows: list[Sequence[Any]], *columns: int) -> tuple[int, ...]:
    return tuple(sum(int(r[c] or 0) for r in rows) for c in columns)


def cases(year: Period, store: str) -> list[Case]:
    """The reports timed: the console's pages over the year (the chain, one store, totals by
    store or tier), two over a range that is not whole months, and two exports."""
    # Not whole months: the stores' rollups by month for March to November, by day around.
    ragged = make_period(year.start + timedelta(days=40), year.end - timedelta(days=11))

    def points(by: tuple[str, ...], one: str | None, days: Period = year) -> Case:
        where = f"store {one}" if one else "the chain"
        span = "" if days == year else f", {days.start:%m-%d} to {days.end:%m-%d}"
        return Case(
            f"points by {', '.join(by) or 'total'}, {where}{span}",
            days,
            by == ("day", "store", "tier"),
            lambda s: points_report(s, days, one, by),
            _points_scan(by, one is not None),
            lambda r: (sum(x.net for x in r.rows), sum(x.issued for x in r.rows)),
            lambda rows: _sums(rows, len(by), len(by) + 1),
        )

    def outstanding(one: str | None) -> Case:
        return Case(
            f"outstanding by day, {'store ' + one if one else 'the chain'}",
            year,
            False,
            lambda s: outstanding_report(s, year, one),
            "SELECT NULL, SUM(e.points) FROM hq_entry e WHERE e.at < :start"
            + (" AND e.store_id = :store" if one else "")
            + f" UNION ALL SELECT {_day()}, SUM(e.points) FROM hq_entry e WHERE e.at >= :start "
            "AND e.at < :after" + (" AND e.store_id = :store" if one else "") + " GROUP BY 1",
            lambda r: (r.rows[-1].outstanding,),
            lambda rows: _sums(rows, 1),
        )

    def gifts(by: tuple[str, ...], one: str | None = None, days: Period = year) -> Case:
        columns = {"day": _day("ev.at"), "store": "ev.store_id"}
        listed = "".join(columns[d] + ", " for d in by)
        span = "" if days == year else f", {days.start:%m-%d} to {days.end:%m-%d}"
        return Case(
            f"gifts by sku{''.join(', ' + d for d in by)}, "
            f"{'store ' + one if one else 'the chain'}{span}",
            days,
            False,
            lambda s: gifts_report(s, days, one, by),
            f"SELECT {listed}CAST(ev.payload AS json) -> 'data' ->> 'sku', "
            "COUNT(DISTINCT ev.event_id), SUM(-e.points) FROM hq_entry e JOIN hq_event ev "
            "ON ev.event_id = e.event_id WHERE e.kind = 'redemption' AND ev.kind = "
            "'gift.redeemed' AND ev.at >= :start AND ev.at < :after "
            + ("AND ev.store_id = :store " if one else "")
            + f"GROUP BY {listed}CAST(ev.payload AS json) -> 'data' ->> 'sku'",
            lambda r: (sum(x.redemptions for x in r.rows), sum(x.points for x in r.rows)),
            lambda rows: _sums(rows, len(by) + 1, len(by) + 2),
        )

    def members(one: str | None) -> Case:
        return Case(
            f"members by day, {'store ' + one if one else 'the chain'}",
            year,
            False,
            lambda s: members_report(s, year, one),
            f"SELECT {_day('m.created_at')}, COUNT(*) FROM hq_member m "
            "WHERE m.tier <> 'unknown' AND m.created_at < :after"
            + (" AND m.store_id = :store" if one else "")
            + " GROUP BY 1",
            lambda r: (r.rows[-1].total,),
            lambda rows: _sums(rows, 1),
        )

    def checkins(by: tuple[str, ...]) -> Case:
        columns = {"day": _day(), "store": "e.store_id"}
        listed = ", ".join(columns[d] for d in by)
        return Case(
            f"checkins by {', '.join(by)}, the chain",
            year,
            by == ("day", "store"),
            lambda s: checkins_report(s, year, None, by),
            f"SELECT {listed}, COUNT(*), SUM(e.points) FROM hq_entry e WHERE e.kind = "
            f"'checkin' AND e.at >= :start AND e.at < :after GROUP BY {listed}",
            lambda r: (sum(x.checkins for x in r.rows), sum(x.points for x in r.rows)),
            lambda rows: _sums(rows, len(by), len(by) + 1),
        )

    return [
        points(("day",), None),
        points(("day", "tier"), None),
        points(("tier",), None),
        points(("day",), store),
        points(("store",), None),
        points(("store", "tier"), None),
        points(("store",), None, ragged),
        outstanding(None),
        outstanding(store),
        gifts(("store",)),
        gifts(()),
        gifts((), store),
        gifts(("store",), None, ragged),
        members(None),
        members(store),
        checkins(("day",)),
        checkins(("store",)),
        points(("day", "store", "tier"), None),
        checkins(("day", "store")),
    ]


def _median_ms(run: Callable[[], Any], times: int) -> tuple[float, Any]:
    spent, result = [], None
    for _ in range(times):
        started = time.perf_counter()
        result = run()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), result


@contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with postgres_cluster() as cluster, fresh_schema(cluster.url) as fresh:
        yield fresh


@dataclass(frozen=True)
class Timed:
    """A report timed, and whether its figures equal the ledger scan's."""

    label: str
    export: bool
    rows: int
    rollup_ms: float
    scan_ms: float
    agree: bool


def run(
    entries: int, stores: int, members: int, runs: int, url: str | None, seed: int = 1
) -> list[Timed]:
    """Loads, rebuilds, times; prints the figures and returns them."""
    days = make_period(FIRST_DAY, FIRST_DAY + timedelta(days=DAYS - 1))  # the year, to "today"
    one_store = "S0001"
    results: list[Timed] = []
    with _database(url) as database:
        engine = make_hq_engine(database)
        upgrade(engine)
        started = time.perf_counter()
        with engine.connect() as conn:
            events = load(conn, entries, stores, members, seed)
        loaded = time.perf_counter() - started
        print(
            f"{entries:,} ledger entries ({events:,} with their gift events) of {members:,} "
            f"members at {stores} stores over {DAYS} days, loaded in {loaded:.1f} s"
        )
        started = time.perf_counter()
        with (
            Progress("rebuilding the rollups", entries + events, "rows") as bar,
            Session(engine) as session,
            session.begin(),
        ):
            rebuilt = rebuild_rollups(
                session, Actor("bench"), datetime.now(UTC), bar.advance, chunk=CHUNK
            )
        rebuild_s = time.perf_counter() - started
        with engine.connect() as conn:
            sizes = {
                str(name): int(size)
                for name, size in conn.execute(
                    text(
                        "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                        "WHERE relkind = 'r' AND (relname = 'hq_entry' OR relname LIKE "
                        "'hq\\_rollup\\_%')"
                    )
                ).tuples()
            }
            conn.execute(text("ANALYZE"))
            conn.commit()
            balances = int(conn.execute(text("SELECT SUM(balance) FROM hq_member")).scalar() or 0)
        rollup_mb = sum(v for k, v in sizes.items() if k != "hq_entry") / 2**20
        print(
            f"rollups rebuilt in {rebuild_s:.1f} s ({entries / rebuild_s:,.0f} entries/s): "
            f"{rebuilt.points_rows:,} points rows, {rebuilt.gift_rows:,} gift rows, "
            f"{rebuilt.member_rows:,} member rows, {rollup_mb:,.0f} MB beside the ledger's "
            f"{sizes['hq_entry'] / 2**20:,.0f} MB"
        )
        print(
            f"\na year's reports ({days.start} to {days.end}), server time (the queries, rows "
            f"fetched, rows made), median of {runs} runs, against scanning the ledger for the "
            f"same figures (median of {min(runs, 3)})"
        )
        print(f"  {'report':<50} {'rows':>8} {'rollups ms':>11} {'scan ms':>10} {'ratio':>8}")
        with Session(engine) as session:
            conn = session.connection()
            for case in cases(days, one_store):

                def read(case: Case = case) -> Report[Any]:
                    return case.report(session)

                def scan(case: Case = case) -> list[Any]:
                    params = {
                        "start": case.days.start,
                        "after": case.days.end + timedelta(days=1),
                        "store": one_store,
                    }
                    return list(conn.execute(text(case.scan), params).all())

                rollup_ms, report = _median_ms(read, runs)
                scan_ms, rows = _median_ms(scan, min(runs, 3))
                agree = case.figures(report) == case.scanned(rows)
                results.append(Timed(case.label, case.export, len(report.rows), rollup_ms,
                                     scan_ms, agree))  # fmt: skip
                label = case.label + (" (export)" if case.export else "")
                print(
                    f"  {label:<50} {len(report.rows):>8,} {rollup_ms:>11.1f} "
                    f"{scan_ms:>10,.0f} {scan_ms / rollup_ms:>7,.0f}x"
                    + ("" if agree else "  FIGURES DIFFER")
                )
            today = outstanding_report(session, days).rows[-1].outstanding
        engine.dispose()
    slowest = max((r for r in results if not r.export), key=lambda r: r.rollup_ms)
    print(
        f"\nslowest report (not an export): {slowest.label}, {slowest.rollup_ms:.1f} ms; every "
        f"report's figures equal the ledger scan's: "
        f"{'yes' if all(r.agree for r in results) else 'NO'}; points outstanding at the end "
        f"of the year {today:,} = the members' balances {balances:,}: "
        f"{'yes' if today == balances else 'NO'}"
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--stores", type=int, default=400)
    parser.add_argument("--members", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="a PostgreSQL database with an empty schema to use")
    args = parser.parse_args(argv)
    run(args.entries, args.stores, args.members, args.runs, args.url)


if __name__ == "__main__":
    main()
