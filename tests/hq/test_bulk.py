"""HQ's bulk statements (hq.bulk) store and find exactly what executemany and IN would, on
both engines: awkward text, NULLs, times, bytes, none and many rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from hq.bulk import among, insert_rows
from hq.models import CentralMember, StoredEvent

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
AWKWARD = ['{"a": "b\\\\c"}', "quote ' and \" and , { } NULL", "会员 \u00e9\t\n", "", "x" * 5000]


def test_insert_rows_stores_every_value_as_given(engine: Engine) -> None:
    rows = [
        {
            "hq_seq": n + 1,
            "event_id": f"E{n:05d}",
            "device_id": "K001",
            "store_id": "S001",
            "device_seq": n + 1,
            "kind": "points.accrued",
            "at": T0 + timedelta(microseconds=n),
            "payload": AWKWARD[n % len(AWKWARD)],
            "received_at": T0,
        }
        for n in range(1200)
    ]
    members = [
        {"id": "M1", "store_id": "S001", "tier": "gold", "phone_masked": "", "balance": 2**40,
         "overdraft_flagged": False, "deleted": False, "created_at": T0, "updated_at": T0,
         "phone_hash": None, "phone_enc": b"\x00\xff\\", "name_enc": b"\x01'\"",
         "birthday_enc": None, "birth_month": 3},
    ]  # fmt: skip
    with engine.begin() as conn:
        insert_rows(conn, StoredEvent, rows)
        insert_rows(conn, StoredEvent, [])  # nothing to do
        insert_rows(conn, CentralMember, members)
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                StoredEvent.hq_seq, StoredEvent.event_id, StoredEvent.at, StoredEvent.payload
            ).order_by(StoredEvent.hq_seq)
        ).all()
        member = conn.execute(select(CentralMember)).one()
    assert [tuple(r) for r in stored] == [
        (r["hq_seq"], r["event_id"], r["at"], r["payload"]) for r in rows
    ]
    assert member.balance == 2**40 and member.phone_enc == b"\x00\xff\\"
    assert member.name_enc == b"\x01'\"" and member.birth_month == 3
    assert member.phone_hash is None and member.deleted is False


def test_insert_rows_stores_times_as_utc_and_refuses_naive_ones(engine: Engine) -> None:
    """A time with another offset is stored as its UTC instant, as an INSERT of the model
    stores it; a time shared by rows (the time a batch was received) is stored in each;
    a naive time is refused before anything is written."""
    plus8 = timezone(timedelta(hours=8))
    shared = datetime(2026, 12, 1, 10, 0, tzinfo=plus8)
    rows: list[dict[str, Any]] = [
        {
            "hq_seq": n + 1,
            "event_id": f"T{n:05d}",
            "device_id": "K001",
            "store_id": "S001",
            "device_seq": n + 1,
            "kind": "points.accrued",
            "at": (T0 + timedelta(seconds=n)).astimezone(plus8) if n % 2 else T0,
            "payload": "{}",
            "received_at": shared,
        }
        for n in range(4)
    ]
    with engine.begin() as conn:
        insert_rows(conn, StoredEvent, rows)
    with engine.connect() as conn:
        stored = conn.execute(
            select(StoredEvent.at, StoredEvent.received_at).order_by(StoredEvent.hq_seq)
        ).all()
    assert [tuple(r) for r in stored] == [
        (r["at"].astimezone(UTC), datetime(2026, 12, 1, 2, 0, tzinfo=UTC)) for r in rows
    ]
    naive = [dict(rows[0], hq_seq=9, event_id="T00009", device_seq=9, at=datetime(2026, 1, 1))]
    with pytest.raises(ValueError, match="naive"), engine.begin() as conn:
        insert_rows(conn, StoredEvent, naive)
    with engine.connect() as conn:
        assert conn.execute(select(StoredEvent.hq_seq).where(StoredEvent.hq_seq == 9)).all() == []


def test_among_matches_in(engine: Engine) -> None:
    rows = [
        {"id": f"M{n}", "store_id": "S001", "tier": "normal", "created_at": T0, "updated_at": T0}
        for n in range(50)
    ]
    with engine.begin() as conn:
        insert_rows(conn, CentralMember, rows)
    with engine.connect() as conn:

        def found(values: list[str]) -> set[str]:
            query = select(CentralMember.id).where(among(conn, CentralMember.id, values))
            return set(conn.execute(query).scalars())

        assert found([]) == set()
        assert found(["M3", "M49", "nobody", "M3"]) == {"M3", "M49"}
        assert found([f"M{n}" for n in range(2000)]) == {f"M{n}" for n in range(50)}


def test_insert_rows_raises_what_an_insert_would(engine: Engine) -> None:
    """A row that breaks a unique constraint fails as an INSERT of SQLAlchemy's would (the
    service takes IntegrityError for a race lost to another worker), and nothing of the
    rows is kept."""
    row = {"id": "M1", "store_id": "S001", "tier": "normal", "created_at": T0, "updated_at": T0}
    with engine.begin() as conn:
        insert_rows(conn, CentralMember, [row])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        insert_rows(conn, CentralMember, [{**row, "id": "M2"}, row])
    with engine.connect() as conn:
        assert list(conn.execute(select(CentralMember.id)).scalars()) == ["M1"]
        conn.execute(select(1))  # the connection is still usable
