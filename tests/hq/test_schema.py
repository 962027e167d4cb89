"""HQ's schema is made and changed by its own migrations only, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from edge.domain.errors import KioskError
from hq import personal
from hq.ledger import take_numbers
from hq.models import Alert, CentralMember, GiftStock, GiftVoucher, HqBase
from hq.schema import HQ_SCHEMA, upgrade
from hq.service import HqConfig, HqService, make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import HQ_VAULT

KIOSK = [sys.executable, "-m", "edge.cli.main"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'hq.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def _differences(engine: Engine) -> list:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), HqBase.metadata))


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_from_empty_and_from_every_earlier_revision_the_schema_is_the_models(database_url):
    engine = make_hq_engine(database_url)
    try:
        assert HQ_SCHEMA.current_revision(engine) is None
        before, after = upgrade(engine)
        assert (before, after) == (None, HQ_SCHEMA.head_revision())
        assert _differences(engine) == []
        assert upgrade(engine) == (after, after)  # again: nothing changes
        for revision in HQ_SCHEMA.revisions():
            HQ_SCHEMA.downgrade(engine, "base")
            assert _tables(engine) <= {"alembic_version"}
            upgrade(engine, revision)
            assert HQ_SCHEMA.current_revision(engine) == revision
            upgrade(engine)
            assert _differences(engine) == [], f"from {revision}"
    finally:
        engine.dispose()


def test_the_service_refuses_a_database_without_the_schema_and_creates_nothing(database_url):
    with pytest.raises(KioskError) as refused:
        HqService(HqConfig(database_url=database_url))
    assert refused.value.code == "schema_not_current"
    assert "run `kiosk hq db upgrade`" in refused.value.message
    engine = make_hq_engine(database_url)
    try:
        assert _tables(engine) == set()
    finally:
        engine.dispose()


def _hq(db: str, *args: str) -> Ran:
    return run_kiosk("hq", "--db", db, *args)


def test_an_operator_upgrades_hq_before_serving(tmp_path: Path):
    db = f"sqlite+pysqlite:///{tmp_path / 'hq.db'}"
    # the service is a process of its own: it exits, in one line, before it serves
    served = subprocess.run(
        [*KIOSK, "hq", "--db", db, "serve"], capture_output=True, text=True, timeout=120
    )
    assert served.returncode == 1, served.stderr
    assert served.stderr.strip().splitlines() == [
        f"error: HQ's database at {db} has no schema yet: run `kiosk hq db upgrade` first"
    ]
    status = _hq(db, "db", "status")
    assert status.stdout.strip() == (
        f"HQ schema (empty), this HQ needs {HQ_SCHEMA.head_revision()}: run `kiosk hq db upgrade`"
    )
    first = _hq(db, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"HQ schema (empty) -> {HQ_SCHEMA.head_revision()}"
    again = _hq(db, "db", "upgrade", "--json")
    assert '"changed": false' in again.stdout
    status = _hq(db, "db", "status", "--json")
    assert '"up_to_date": true' in status.stdout


def test_an_earlier_hqs_events_and_alerts_carry_over_to_the_chain_counter(database_url):
    """hq_0002 numbers on from the events already stored, and closes duplicate open alerts
    a single HQ could leave, before one open alert per kind and subject becomes a rule."""
    engine = make_hq_engine(database_url)
    try:
        upgrade(engine, "hq_0001")
        at = "2026-12-01 02:00:00.000000"
        with engine.begin() as conn:
            for seq in (1, 2, 3):
                conn.execute(
                    text(
                        "INSERT INTO hq_event (hq_seq, event_id, device_id, store_id, "
                        "device_seq, kind, at, payload, received_at) VALUES "
                        "(:seq, :id, 'K001', 'S001', :seq, 'x', :at, '{}', :at)"
                    ),
                    {"seq": seq, "id": f"E{seq}", "at": at},
                )
            for _ in range(2):
                conn.execute(
                    text(
                        "INSERT INTO hq_alert (kind, subject, store_id, device_id, detail, "
                        "raised_at) VALUES ('overdraft', 'M1', '', '', '', :at)"
                    ),
                    {"at": at},
                )
        upgrade(engine)
        with Session(engine) as s, s.begin():
            assert take_numbers(s, 2) == 4
            open_alerts = s.scalars(
                select(Alert.id).where(Alert.kind == "overdraft", Alert.cleared_at.is_(None))
            ).all()
        assert len(open_alerts) == 1
    finally:
        engine.dispose()


def test_hq_0008_fills_in_the_gift_vouchers_of_the_events_stored_before(database_url):
    """Vouchers printed before HQ kept them are found by another store's check all the same
    (without the gift's name and date, which their events did not carry)."""
    engine = make_hq_engine(database_url)
    try:
        upgrade(engine, "hq_0007")
        at = "2026-12-01 02:00:00.000000"
        gift = {"redemption_id": "01JGIFT0000000000000000001", "sku": "TOWEL", "qty": 1}
        coupon = {"redemption_id": "01JCOUPON00000000000000001", "sku": "C10", "qty": 2}
        datas = [
            gift | {"member_id": "01JMEMBER0000000000000001", "card_no": "1000000018"},
            coupon | {"member_id": "01JMEMBER0000000000000001", "coupons": 2},
            {"member_id": "01JMEMBER0000000000000001", "entries": []},  # no voucher named
        ]
        with engine.begin() as conn:
            for seq, data in enumerate(datas, 1):
                conn.execute(
                    text(
                        "INSERT INTO hq_event (hq_seq, event_id, device_id, store_id, "
                        "device_seq, kind, at, payload, received_at) VALUES "
                        "(:seq, :id, 'K001', 'S001', :seq, 'gift.redeemed', :at, :p, :at)"
                    ),
                    {"seq": seq, "id": f"E{seq}", "at": at, "p": json.dumps({"data": data})},
                )
        upgrade(engine)
        with Session(engine) as s:
            kept = s.scalars(select(GiftVoucher)).all()
        assert [(v.issuer_device_id, v.voucher_id, v.sku, v.qty, v.card_no) for v in kept] == [
            ("K001", gift["redemption_id"], "TOWEL", 1, "1000000018")
        ]
        assert (kept[0].name, kept[0].valid_until, kept[0].event_id) == ("", None, "E1")
    finally:
        engine.dispose()


def test_hq_0014_seals_the_names_and_birthdays_kept_before(database_url, tmp_path):
    """Members kept in clear before hq_0014 are sealed with HQ's data key in place; their
    birthday's month stays in clear for the campaigns. Without the key the upgrade refuses."""
    engine = make_hq_engine(database_url)
    try:
        upgrade(engine, "hq_0012")
        at = "2026-12-01 02:00:00.000000"
        with engine.begin() as conn:
            for member_id, name, birthday in (
                ("M1", "欧阳秀英", "1950-03-09"),
                ("M2", None, "1961-11-30"),
                ("M3", "李四", None),
                ("M4", None, None),
            ):
                conn.execute(
                    text(
                        "INSERT INTO hq_member (id, store_id, tier, phone_masked, balance, "
                        "overdraft_flagged, deleted, created_at, updated_at, name, birthday) "
                        "VALUES (:id, 'S001', 'normal', '', 0, false, false, :at, :at, :name, "
                        ":birthday)"
                    ),
                    {"id": member_id, "at": at, "name": name, "birthday": birthday},
                )
            registration = {
                "data": {"member_id": "M1", "name": "欧阳秀英", "birthday": "1950-03-09"}
            }
            conn.execute(
                text(
                    "INSERT INTO hq_event (hq_seq, event_id, device_id, store_id, "
                    "device_seq, kind, at, payload, received_at) VALUES "
                    "(1, 'E1', 'K001', 'S001', 1, 'member.registered', :at, :p, :at)"
                ),
                {"at": at, "p": json.dumps(registration, ensure_ascii=False)},
            )
        with pytest.raises(KioskError) as refused:
            upgrade(engine)
        assert refused.value.code == "key_missing"
        assert HQ_SCHEMA.current_revision(engine) == "hq_0012"  # nothing half done
        upgrade(engine, vault=lambda: HQ_VAULT)
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT * FROM hq_member ORDER BY id")).all()
            kept_event = conn.execute(text("SELECT payload FROM hq_event")).scalar_one()
        assert "name" not in raw[0]._fields and "birthday" not in raw[0]._fields
        assert json.loads(kept_event) == {"data": {"member_id": "M1"}}
        stored = repr(raw).encode() + b"".join(
            bytes(v) for row in raw for v in row if isinstance(v, bytes | memoryview)
        )
        for clear in ("欧阳秀英".encode(), "李四".encode(), b"1950-03-09", b"1961-11-30"):
            assert clear not in stored
        with Session(engine) as s:
            members = {m.id: m for m in s.scalars(select(CentralMember))}
            assert {
                m.id: (personal.name_of(HQ_VAULT, m), personal.birthday_of(HQ_VAULT, m))
                for m in members.values()
            } == {
                "M1": ("欧阳秀英", date(1950, 3, 9)),
                "M2": (None, date(1961, 11, 30)),
                "M3": ("李四", None),
                "M4": (None, None),
            }
            assert {m.id: m.birth_month for m in members.values()} == {
                "M1": 3, "M2": 11, "M3": None, "M4": None
            }  # fmt: skip
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_hq_0020_fills_in_each_kiosks_gift_stock_from_the_events_stored_before(database_url):
    """The stock HQ shows per store starts from the events stored before it kept it: the
    last figure a kiosk reported, less what it redeemed since."""
    engine = make_hq_engine(database_url)
    try:
        upgrade(engine, "hq_0017")
        at = "2026-12-01 02:00:00.000000"
        events = [
            ("K001", "S001", "gift.changed", {"sku": "TOWEL", "stock": 10}),
            ("K001", "S001", "gift.redeemed", {"sku": "TOWEL", "qty": 3}),
            ("K002", "S001", "gift.redeemed", {"sku": "TOWEL", "qty": 1}),  # no figure yet
            ("K002", "S001", "gift.stock", {"sku": "TOWEL", "stock": 6, "delta": 6}),
            ("K001", "S001", "gift.redeemed", {"sku": "MUG", "qty": 1}),  # never a figure
            ("K003", "S002", "alert.low_stock", {"sku": "TOWEL", "stock": 2, "threshold": 2}),
            ("K003", "S002", "points.accrued", {"sku": "TOWEL", "stock": 99}),  # not stock
        ]
        with engine.begin() as conn:
            for seq, (device, store, kind, data) in enumerate(events, 1):
                conn.execute(
                    text(
                        "INSERT INTO hq_event (hq_seq, event_id, device_id, store_id, "
                        "device_seq, kind, at, payload, received_at) VALUES "
                        "(:seq, :id, :device, :store, :seq, :kind, :at, :p, :at)"
                    ),
                    {"seq": seq, "id": f"E{seq}", "device": device, "store": store,
                     "kind": kind, "at": at, "p": json.dumps({"data": data})},
                )  # fmt: skip
        upgrade(engine)
        with Session(engine) as s:
            rows = s.scalars(select(GiftStock).order_by(GiftStock.device_id)).all()
        assert [(r.device_id, r.store_id, r.sku, r.stock, r.event_id) for r in rows] == [
            ("K001", "S001", "TOWEL", 7, "E2"),
            ("K002", "S001", "TOWEL", 6, "E4"),
            ("K003", "S002", "TOWEL", 2, "E6"),
        ]
        assert _differences(engine) == []
    finally:
        engine.dispose()
