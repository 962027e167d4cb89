"""Backups made while the kiosk writes, rotation, and restores that lose no ledger entry."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import IntegrityError, Refusal
from edge.files import file_sha256
from edge.lifecycle import backup as backups
from edge.lifecycle.backup import create_backup, list_backups, rotate
from edge.lifecycle.restore import restore_backup
from edge.services import gifts, members, points
from edge.services.verify import verify_ledger

TABLES = ("ledger_entry", "member", "points_lot", "card", "gift", "redemption", "audit", "outbox")


def dump(db: Path, table: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


def entry_ids(db: Path) -> set[str]:
    return {row[0] for row in dump(db, "ledger_entry")}


def busy_store(app: AppContext, n: int = 5) -> list[str]:
    cards = []
    for i in range(n):
        card = members.register_member(app, f"1380013{i:04d}", True).card_no
        points.accrue_purchase(app, card, 50_000 + i * 100, f"R-{i}")
        cards.append(card)
    gifts.add_gift(app, "TOWEL", "毛巾", 300, 10)
    gifts.redeem_gift(app, cards[0], "TOWEL", 1, request_id="q-1")
    return cards


def replacement(tmp_path: Path, source: AppContext) -> Path:
    """A new device's data directory holding the chain's keys (from HQ), no database."""
    data = tmp_path / "replacement"
    data.mkdir()
    shutil.copytree(source.data_dir / "keys", data / "keys")
    return data


def db_file(app: AppContext) -> Path:
    return app.data_dir / "kiosk.db"


def test_round_trip_restores_the_exact_ledger(app, tmp_path):
    busy_store(app)
    info = create_backup(db_file(app), app.data_dir / "backups", store_id="S001", device_id="K001")
    assert info.ledger_entries == len(entry_ids(db_file(app))) > 5
    assert info.sha256 == file_sha256(info.path)
    data = replacement(tmp_path, app)
    result = restore_backup(info.path, data, KioskConfig())
    assert result.warnings == [] and result.replaced == []
    for table in TABLES:
        assert dump(data / "kiosk.db", table) == dump(db_file(app), table), table
    restored = AppContext.open(data, config=KioskConfig())
    try:
        assert verify_ledger(restored).ok
        view = members.show_member(restored, phone="13800130003")
        assert view.balance == members.show_member(app, phone="13800130003").balance
    finally:
        restored.close()


def test_backup_while_the_kiosk_writes_loses_nothing_committed(app, tmp_path):
    cards = busy_store(app, 3)
    stop = threading.Event()
    written: list[int] = []

    def lane() -> None:
        i = 0
        while not stop.is_set():
            points.accrue_purchase(app, cards[i % 3], 1_000 + i, f"LANE-{i}")
            written.append(i)
            i += 1

    writer = threading.Thread(target=lane)
    writer.start()
    try:
        while len(written) < 20:
            stop.wait(0.01)
        before = entry_ids(db_file(app))
        info = create_backup(
            db_file(app), app.data_dir / "backups", store_id="S001", device_id="K001"
        )
        while len(written) < len(before) + 20:
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()
    after = entry_ids(db_file(app))
    data = replacement(tmp_path, app)
    restore_backup(info.path, data, KioskConfig())
    restored = entry_ids(data / "kiosk.db")
    assert before <= restored <= after
    assert len(restored) == info.ledger_entries
    assert len(after) > len(restored)  # the lane kept writing during and after the copy
    check = AppContext.open(data, config=KioskConfig())
    try:
        assert verify_ledger(check).ok  # a consistent cut: balances match the entries
    finally:
        check.close()


def test_restore_keeps_the_database_it_replaces(app, tmp_path):
    busy_store(app, 2)
    info = create_backup(db_file(app), tmp_path / "b", store_id="S001", device_id="K001")
    data = replacement(tmp_path, app)
    other = AppContext.open(data, config=KioskConfig())
    members.register_member(other, "13900139000", True)
    other.close()
    theirs = dump(data / "kiosk.db", "member")
    result = restore_backup(info.path, data, KioskConfig())
    kept = result.replaced[0]
    assert kept.parent == data / "replaced" and kept.suffix == ".db"
    assert all(p.name.startswith(kept.name) for p in result.replaced)  # with its WAL
    assert dump(result.replaced[0], "member") == theirs
    assert dump(data / "kiosk.db", "member") == dump(db_file(app), "member")


def test_a_damaged_backup_is_refused_and_the_live_database_untouched(app, tmp_path):
    busy_store(app, 2)
    info = create_backup(db_file(app), tmp_path / "b", store_id="S001", device_id="K001")
    data = replacement(tmp_path, app)
    live = AppContext.open(data, config=KioskConfig())
    members.register_member(live, "13900139000", True)
    live.close()
    before = (data / "kiosk.db").read_bytes()
    raw = bytearray(info.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    info.path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as err:
        restore_backup(info.path, data, KioskConfig())
    assert err.value.code == "backup_checksum"
    # a valid checksum over a bad gzip stream is caught when unpacking
    with pytest.raises(IntegrityError):
        restore_backup(
            info.path,
            data,
            KioskConfig(),
            expected_sha256=file_sha256(info.path),
        )
    assert (data / "kiosk.db").read_bytes() == before
    assert not list(data.glob(".restore-*"))


def test_a_backup_whose_ledger_does_not_add_up_is_refused(app, tmp_path):
    busy_store(app, 2)
    info = create_backup(db_file(app), tmp_path / "b", store_id="S001", device_id="K001")
    # Someone edits a balance inside the backup and fixes up its checksum.
    plain = tmp_path / "plain.db"
    with gzip.open(info.path) as src, plain.open("wb") as out:
        shutil.copyfileobj(src, out)
    conn = sqlite3.connect(plain)
    conn.execute("UPDATE member SET balance = balance + 5000")
    conn.commit()
    conn.close()
    with plain.open("rb") as src, gzip.open(info.path, "wb") as out:
        shutil.copyfileobj(src, out)
    data = replacement(tmp_path, app)
    with pytest.raises(IntegrityError) as err:
        restore_backup(info.path, data, KioskConfig(), expected_sha256=file_sha256(info.path))
    assert err.value.code == "backup_invalid"
    assert "balance" in err.value.message
    assert not (data / "kiosk.db").exists()


def test_restore_refuses_while_the_kiosk_has_the_database_open(app, tmp_path):
    busy_store(app, 1)
    info = create_backup(db_file(app), tmp_path / "b", store_id="S001", device_id="K001")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]);"
            "c.execute('select 1 from member'); print('open', flush=True); time.sleep(60)",
            str(db_file(app)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        app.close()
        with pytest.raises(Refusal) as err:
            restore_backup(info.path, app.data_dir, KioskConfig())
        assert err.value.code == "database_in_use"
        assert str(holder.pid) in err.value.message
    finally:
        holder.kill()
        holder.wait()


def test_rotation_keeps_the_newest_backup_of_each_recent_day(app, tmp_path):
    busy_store(app, 1)
    where = tmp_path / "rot"
    start = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    made = []
    for day in range(6):
        for hour in (1, 13):
            made.append(
                create_backup(
                    db_file(app),
                    where,
                    store_id="S001",
                    device_id="K001",
                    now=start + timedelta(days=day, hours=hour),
                    keep_daily=100,
                )
            )
    # one a day survives for past days; the last 24 hours keep both
    at = [b.created_at for b in list_backups(where)]
    assert at == [made[i].created_at for i in (1, 3, 5, 7, 9, 10, 11)]
    removed = rotate(where, keep_daily=3)
    kept = list_backups(where)
    assert [b.created_at for b in kept] == [made[i].created_at for i in (7, 9, 10, 11)]
    assert len(removed) == 3
    assert {p.name for p in where.iterdir()} == {
        n for b in kept for n in (b.path.name, b.manifest.name)
    }


def test_backup_list_says_which_backups_hq_holds(app, tmp_path):
    import json

    busy_store(app, 1)
    first = create_backup(db_file(app), app.data_dir / "backups", store_id="S001", device_id="K1")
    backups.mark_delivered(first, datetime.now(UTC))
    kiosk = str(Path(sys.executable).parent / "kiosk")
    listed = subprocess.run(
        [kiosk, "--data-dir", str(app.data_dir), "--json", "backup", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(listed.stdout)
    assert row["path"] == str(first.path) and row["delivered_at"] is not None
    human = subprocess.run(
        [kiosk, "--data-dir", str(app.data_dir), "backup", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "at HQ" in human.stdout and "not at HQ yet" not in human.stdout
