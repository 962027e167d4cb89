"""HQ's reports add up to the ledger they summarise, on SQLite and PostgreSQL.

A realistic chain (tests/hq/reconcile.py) goes through HQ's real ingest, with an import and
a merge at HQ among its events; every report, for several ranges, each store and every
grouping, must equal what the test sums from ``hq_entry`` (and the events and members)
itself. The rollups must come out the same when rebuilt, when the migration fills them from
an earlier database, and when several workers store the chain at once.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, func, select, text
from sqlalchemy.orm import Session

from edge.cli.main import main as kiosk
from edge.domain.cards import card_number
from edge.domain.errors import InvalidInput, NotFound
from edge.domain.ids import IdFactory
from edge.domain.merges import OldCards
from edge.security.personal import PhoneVault
from hq.audit import Actor
from hq.importer import MemberImporter, read_export
from hq.ledger import CentralLedger, balances
from hq.merges import merge_members
from hq.models import AuditRecord, CentralMember
from hq.reports import (
    Period,
    checkins_report,
    gifts_report,
    make_period,
    members_report,
    outstanding_report,
    period,
    points_report,
    run_report,
    whole_months,
)
from hq.rollups import ROLLUP_TABLES, rebuild_rollups
from hq.schema import HQ_SCHEMA, upgrade
from hq.service import HqConfig, HqService
from tests.hq.database import HQ_VAULT, hq_data_key_file, migrated_engine, sqlite_hq_url
from tests.hq.reconcile import (
    DEVICES,
    START,
    Chain,
    Ledger,
    expected_checkins,
    expected_gifts,
    expected_members,
    expected_outstanding,
    expected_points,
    live_members,
    make_chain,
)

NOW = datetime(2026, 3, 27, 9, 0, tzinfo=UTC)  # after the chain's last day: its "today"
MERGED_AT = START + timedelta(days=21, hours=23, minutes=59, seconds=30)
IMPORTED_AT = START + timedelta(days=9)
STORES = sorted({s for _, s in DEVICES})


@dataclass
class Built:
    chain: Chain
    hq_tiers: dict[str, str]  # the tier of each member an HQ-side entry (merge) was booked for


def _import(engine: Engine, tmp_path: Path) -> None:
    """Three members from the chain's earlier system, with opening lots, through HQ's
    importer (one of them with a lot already expired, left out)."""
    export = tmp_path / "members.csv"
    export.write_text(
        "card_no,home_store,tier,lots,registered_at\n"
        f"{card_number(910_001)},S001,gold,500@2027-06-30;70@2027-01-31,2026-02-24\n"
        f"{card_number(910_002)},S002,silver,120@2027-03-31,2026-03-03\n"
        f"{card_number(910_003)},S003,normal,40@2026-01-31,\n",
        encoding="utf-8",
    )
    vault = PhoneVault(bytes(range(32)), bytes(range(1, 33)))
    report = MemberImporter(engine, vault, set(STORES), now=lambda: IMPORTED_AT).run(
        read_export(export)
    )
    assert report.imported == 3


def build(engine: Engine, tmp_path: Path, seed: int) -> Built:
    """The chain through HQ's ingest, a batch a transaction as the workers store them; a merge
    at HQ after 60 % of the batches, an import at the end."""
    chain = make_chain(seed)
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    cut = len(chain.deliveries) * 6 // 10
    hq_tiers: dict[str, str] = {}
    for n, (device, batch) in enumerate(chain.deliveries):
        if n == cut:
            with Session(engine) as s, s.begin():
                candidates = [
                    m
                    for m in s.scalars(
                        select(CentralMember)
                        .where(
                            CentralMember.tier != "unknown",
                            CentralMember.deleted.is_(False),
                            CentralMember.merged_into.is_(None),
                        )
                        .order_by(CentralMember.id)
                    )
                ]
                keep, absorb = (
                    next(m for m in candidates if m.store_id == "S001"),
                    next(m for m in candidates if m.store_id == "S002"),
                )
                hq_tiers = {keep.id: keep.tier, absorb.id: absorb.tier}
                merge_members(
                    s, keep.id, absorb.id, OldCards.KEEP, "one person", "ops", MERGED_AT,
                    IdFactory(),
                )  # fmt: skip
        with Session(engine) as s, s.begin():
            result = ledger.ingest(s, device, batch, NOW)
        assert not result.gap and not result.quarantined, (result.gap, result.quarantined)
    _import(engine, tmp_path)
    return Built(chain, hq_tiers)


def tiers_of(ledger: Ledger, built: Built) -> dict[str, str]:
    """Each entry's tier as the test works it out: the events replayed for the devices'
    entries, the tier the member had for the merge's, the file's for the import's."""
    replayed = ledger.replayed_tiers()
    out: dict[str, str] = {}
    for e in ledger.entries:
        if e.device_id == "hq-merge":
            out[e.id] = built.hq_tiers[e.member_id]
        elif e.device_id == "hq-import":
            out[e.id] = ledger.members[e.member_id][1]
        else:
            out[e.id] = replayed[e.id]
    return out


GROUPINGS_3 = [
    tuple(c) for n in range(4) for c in itertools.combinations(("day", "store", "tier"), n)
]
GROUPINGS_2 = [tuple(c) for n in range(3) for c in itertools.combinations(("day", "store"), n)]


def check_reports(session: Session, ledger: Ledger, tier_of: dict[str, str]) -> None:
    """Every report, for several ranges, the chain and each store, every grouping, equals
    the test's own sums."""
    first = min(e.day for e in ledger.entries)
    last = max(e.day for e in ledger.entries)
    assert (first, last) >= (date(2026, 2, 1), date(2026, 3, 1)) and last <= date(2026, 3, 31)
    ranges = [
        make_period(date(2026, 2, 1), date(2026, 3, 31)),  # whole months (of stores: by month)
        make_period(date(2026, 2, 25), date(2026, 3, 31)),  # days, then a whole month
        make_period(first + timedelta(days=9), last - timedelta(days=6)),  # days only
        make_period(first + timedelta(days=13), first + timedelta(days=13)),
    ]
    for days, store in itertools.product(ranges, [None, *STORES]):
        where = (days, store)
        for by in GROUPINGS_3:
            got = points_report(session, days, store, by)
            assert got.rows == expected_points(ledger, tier_of, days, store, by), (where, by)
        for by in GROUPINGS_2:
            assert gifts_report(session, days, store, by).rows == expected_gifts(
                ledger, days, store, by
            ), (where, by)
            assert checkins_report(session, days, store, by).rows == expected_checkins(
                ledger, days, store, by
            ), (where, by)
        assert outstanding_report(session, days, store).rows == expected_outstanding(
            ledger, days, store
        ), where
        assert members_report(session, days, store).rows == expected_members(ledger, days, store), (
            where
        )


def test_every_report_equals_the_sums_of_the_ledger_it_reads_from_rollups(engine, tmp_path):
    built = build(engine, tmp_path, seed=20261208)
    with Session(engine) as s:
        ledger = Ledger.read(s)
        tier_of = tiers_of(ledger, built)
        # The ledger the reports cover has every kind, several tiers and many days.
        kinds = {e.kind for e in ledger.entries}
        assert {"purchase", "checkin", "birthday", "referral", "redemption", "expiry",
                "refund", "adjustment", "voucher_return", "opening", "merge_in", "merge_out",
                "promo"} <= kinds  # fmt: skip
        assert {tier_of[e.id] for e in ledger.entries} >= {"normal", "silver", "gold", "unknown"}
        assert len({e.day for e in ledger.entries}) > 25
        # Each entry counts under the tier its member had when HQ stored it.
        assert {e.id: e.tier for e in ledger.entries} == tier_of
        check_reports(s, ledger, tier_of)

        # Outstanding at the end of today is what the members hold; the members, who is in.
        today = NOW.date()
        year = outstanding_report(s, make_period(today - timedelta(days=364), today))
        assert year.rows[-1].outstanding == sum(balances(s).values()) != 0
        grown = members_report(s, make_period(today - timedelta(days=364), today))
        assert grown.rows[-1].total == live_members(ledger) > 0
        assert sum(r.departed for r in grown.rows) >= 2  # an erasure and the merge at least


def test_a_report_makes_a_table_a_csv_and_chart_series(engine, tmp_path):
    build(engine, tmp_path, seed=7)
    days = make_period(date(2026, 2, 20), date(2026, 3, 26))
    with Session(engine) as s:
        by_tier = points_report(s, days, by=("day", "tier"))
        gifts = gifts_report(s, days)
    assert by_tier.columns[:2] == ("day", "tier") and "issued" in by_tier.columns
    lines = by_tier.csv().splitlines()
    assert lines[0].split(",") == list(by_tier.columns)
    assert len(lines) == len(by_tier.rows) + 1 and lines[1].startswith("2026-02-2")
    series = by_tier.series("issued")
    assert set(series) == {r.tier for r in by_tier.rows}
    assert sum(v for points in series.values() for _, v in points) == sum(
        r.issued for r in by_tier.rows
    )
    assert all(day == sorted(day) for day in ([d for d, _ in p] for p in series.values()))
    bars = gifts.series("points", x="sku")
    assert set(bars) == {r.store_id for r in gifts.rows}
    with pytest.raises(InvalidInput):
        by_tier.series("tier")
    as_json = json.loads(json.dumps(by_tier.as_dict()))
    assert as_json["rows"][0]["day"] == by_tier.rows[0].day.isoformat()


def _rollups(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for model in ROLLUP_TABLES:
        table = cast(Table, model.__table__)
        out[table.name] = sorted(tuple(row) for row in session.execute(select(table)).tuples())
    return out


def test_rebuild_and_the_migration_work_the_same_rollups_out_again(engine, tmp_path):
    build(engine, tmp_path, seed=11)
    with Session(engine) as s:
        kept = _rollups(s)
    with Session(engine) as s, s.begin():
        seen: list[int] = []
        report = rebuild_rollups(
            s, Actor("ops"), NOW, seen.append, chunk=37, started=seen.append
        )  # small chunks: every boundary of the id ranges is crossed
    assert seen[0] == report.entries + report.events == sum(seen[1:])
    assert report.outstanding == report.outstanding_before
    with Session(engine) as s:
        assert _rollups(s) == kept
        audit = s.scalars(select(AuditRecord)).one()
        assert (audit.actor, audit.action, audit.source) == ("ops", "reports.rebuild", "cli")
        assert json.loads(audit.after)["outstanding"] == report.outstanding

    # A database from before the rollups: the upgrade fills them from what it holds, each
    # entry under its member's tier of the day (the entries kept none then).
    HQ_SCHEMA.downgrade(engine, "hq_0017")
    upgrade(engine)
    with Session(engine) as s:
        after = _rollups(s)
        for name in ("hq_rollup_gift", "hq_rollup_member"):
            assert after[name] == kept[name]
        ledger = Ledger.read(s)
        assert {e.tier for e in ledger.entries} == {None}
        now_tier = {e.id: ledger.members[e.member_id][1] for e in ledger.entries}
        check_reports(s, ledger, now_tier)


def test_workers_storing_at_once_keep_the_rollups_exact(postgres_url, tmp_path):
    """Four workers store the chain's batches, each delivered twice in any order (a batch
    ahead of its device's order is told to wait and comes again): every rollup row is
    added to by many transactions at once, none of their increments is lost."""
    rng = random.Random(4)
    chain = make_chain(seed=4, per_device=150)
    workers = [
        HqService(
            HqConfig(database_url=postgres_url, client_id=f"hq-{n}",
                     data_key_file=hq_data_key_file()),
            migrated_engine(postgres_url),
        )
        for n in range(4)
    ]  # fmt: skip
    deliveries = [d for d in chain.deliveries for _ in range(2)]
    rng.shuffle(deliveries)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(hq: HqService) -> None:
        while True:
            with lock:
                if not deliveries or errors:
                    return
                device, batch = deliveries.pop(0)
            try:
                result = hq.store_batch(device, batch, datetime.now(UTC))
            except BaseException as exc:  # reported below, with the others stopped
                errors.append(exc)
                return
            if result.gap:
                with lock:
                    deliveries.insert(rng.randint(0, len(deliveries)), (device, batch))

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    engine = workers[0].engine
    total = sum(len(v) for v in chain.events.values())
    with Session(engine) as s:
        assert s.scalar(text("SELECT COUNT(*) FROM hq_event")) == total
        ledger = Ledger.read(s)
        check_reports(s, ledger, ledger.replayed_tiers())
    for w in workers:
        w.engine.dispose()


def test_a_period_splits_into_whole_months_and_the_days_around_them():
    def split(a: str, b: str) -> tuple[Any, Any]:
        return whole_months(make_period(date.fromisoformat(a), date.fromisoformat(b)))

    assert split("2026-01-01", "2026-12-31") == ((date(2026, 1, 1), date(2026, 12, 1)), [])
    assert split("2026-01-15", "2026-04-10") == (
        (date(2026, 2, 1), date(2026, 3, 1)),
        [(date(2026, 1, 15), date(2026, 1, 31)), (date(2026, 4, 1), date(2026, 4, 10))],
    )
    assert split("2026-02-01", "2026-02-28") == ((date(2026, 2, 1), date(2026, 2, 1)), [])
    assert split("2026-02-02", "2026-03-30") == (None, [(date(2026, 2, 2), date(2026, 3, 30))])
    assert split("2025-12-31", "2026-01-31") == (
        (date(2026, 1, 1), date(2026, 1, 1)),
        [(date(2025, 12, 31), date(2025, 12, 31))],
    )


def test_a_period_is_read_as_typed_and_bad_ones_are_refused():
    assert period("2026-03-01", "2026-03-31") == Period(date(2026, 3, 1), date(2026, 3, 31))
    assert period(None, None, today=date(2026, 3, 31)) == Period(
        date(2026, 3, 2), date(2026, 3, 31)
    )
    assert period(None, "2026-01-10").start == date(2025, 12, 12)
    for start, end, message in [
        ("2026-02-30", "2026-03-01", "--from must be a day as YYYY-MM-DD, not '2026-02-30'"),
        ("2026-03-01", "31/03/2026", "--to must be a day as YYYY-MM-DD, not '31/03/2026'"),
        ("2026-03-02", "2026-03-01", "the range starts (2026-03-02) after it ends (2026-03-01)"),
        ("2010-01-01", "2026-03-01", "a report covers at most 3660 days, not 5904 "
         "(2010-01-01 to 2026-03-01)"),
    ]:  # fmt: skip
        with pytest.raises(InvalidInput) as refused:
            period(start, end)
        assert refused.value.message == message


def test_a_report_refuses_an_unknown_name_grouping_or_store(engine):
    days = make_period(date(2026, 3, 1), date(2026, 3, 2))
    with Session(engine) as s:
        for name, store, by, message in [
            ("sales", None, None, "no report 'sales': the reports are points, outstanding, "
             "gifts, members, checkins"),
            ("gifts", None, ["tier"], "the gifts report is by day, store or none of them, "
             "not tier"),
            ("members", None, [], "the members report is by day only"),
        ]:  # fmt: skip
            with pytest.raises(InvalidInput) as refused:
                run_report(s, name, days, store, by)
            assert refused.value.message == message
        with pytest.raises(NotFound) as missing:
            run_report(s, "points", days, "S404")
        assert missing.value.message == "no store S404 at HQ"


def kiosk_hq(capsys, db: str, *args: str) -> tuple[int, str, str]:
    code = kiosk(["hq", "--db", db, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_report_commands_print_what_the_console_gets_and_refuse_in_one_line(
    tmp_path, capsys, monkeypatch
):
    db = sqlite_hq_url(tmp_path / "hq.db")
    engine = migrated_engine(db)
    build(engine, tmp_path, seed=3)
    days = make_period(date(2026, 2, 20), date(2026, 3, 26))
    with Session(engine) as s:
        by_store = run_report(s, "points", days, None, ["day", "store"])
        gifts = run_report(s, "gifts", days, "S002")
        members = run_report(s, "members", days)
    span = ("--from", "2026-02-20", "--to", "2026-03-26")
    code, out, err = kiosk_hq(capsys, db, "report", "points", *span, "--by", "day,store", "--csv")
    assert (code, err, out) == (0, "", by_store.csv())
    code, out, err = kiosk_hq(capsys, db, "report", "gifts", *span, "--store", "S002", "--json")
    assert code == 0 and json.loads(out) == gifts.as_dict()
    code, out, err = kiosk_hq(capsys, db, "report", "members", *span)
    lines = out.splitlines()
    assert lines[0] == (
        "members of the chain, 2026-02-20 to 2026-03-26 (UTC days), by day: 35 rows"
    )
    assert lines[1].split() == ["day", "joined", "departed", "total"]
    assert lines[-1].split() == [
        "2026-03-26", "0", "0", f"{members.rows[-1].total:,}"
    ]  # fmt: skip

    for args, message in [
        (("report", "sales"), "no report 'sales': the reports are points, outstanding, gifts, "
         "members, checkins"),
        (("report", "points", "--from", "2026-3-1"),
         "--from must be a day as YYYY-MM-DD, not '2026-3-1'"),
        (("report", "points", "--from", "2026-03-02", "--to", "2026-03-01"),
         "the range starts (2026-03-02) after it ends (2026-03-01)"),
        (("report", "points", "--csv", "--json"), "--csv or --json, not both"),
        (("report", "points", "--store", "S404"), "no store S404 at HQ"),
        (("report", "checkins", "--by", "tier"),
         "the checkins report is by day, store or none of them, not tier"),
    ]:  # fmt: skip
        code, out, err = kiosk_hq(capsys, db, *args)
        assert (code, out, err.splitlines()) == (1, "", [f"error: {message}"]), args

    # Rebuild: the same rollups, in HQ's audit log under the --actor.
    with Session(engine) as s:
        kept = _rollups(s)
    code, out, err = kiosk_hq(capsys, db, "reports", "rebuild", "--actor", "li.ops", "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["outstanding"] == done["outstanding_before"] and done["entries"] > 0
    assert "rebuilding the reports' rollups" in err
    with Session(engine) as s:
        assert _rollups(s) == kept
        assert s.scalar(select(func.count()).select_from(AuditRecord)) == 1
        assert s.scalar(select(AuditRecord.actor)) == "li.ops"
    engine.dispose()
