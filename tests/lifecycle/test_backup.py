"""Backups made while the kiosk writes, rotation, and restores that lose no ledger entry."""

from __future__ import annotations

import gzip
import json
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
from tests.cli_runner import Ran, run_kiosk

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


def reseal(backup: Path, **changes: object) -> None:
    """What a careful forger does: the manifest beside ``backup`` made to fit the file."""
    manifest = backup.with_name(backup.name + ".json")
    body = json.loads(manifest.read_text(encoding="utf-8"))
    body.update(sha256=file_sha256(backup), size=backup.stat().st_size, **changes)
    manifest.write_text(json.dumps(body), encoding="utf-8")


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
    # a manifest made to fit a bad gzip stream: caught when unpacking
    reseal(info.path)
    with pytest.raises(IntegrityError) as err:
        restore_backup(info.path, data, KioskConfig())
    assert "cannot be unpacked" in err.value.message
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
    reseal(info.path)
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


# -- a hostile or careless technician at `kiosk backup restore` --------------------------------


def kiosk(data: Path, *args: object) -> Ran:
    """``kiosk --data-dir DATA ARGS`` as a technician types it (without their KIOSK_* settings),
    run as a fresh command in this process."""
    return run_kiosk("--data-dir", str(data), *map(str, args), drop_env=("KIOSK_",))


def device_files(data: Path) -> dict[str, str]:
    """Every file of a data directory with its SHA-256 (lock files aside: they hold nothing)."""
    return {
        str(p.relative_to(data)): file_sha256(p)
        for p in sorted(data.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", ".gate"))
    }


def make_device(tmp_path: Path, name: str, device_id: str, phones: int = 3) -> Path:
    """A kiosk's data directory with members and ledger entries, closed (the kiosk stopped)."""
    data = tmp_path / name
    data.mkdir()
    (data / "config.toml").write_text(f'[device]\ndevice_id = "{device_id}"\n', encoding="utf-8")
    app = AppContext.open(data)
    try:
        for i in range(phones):
            card = members.register_member(app, f"1390013{i:04d}", True).card_no
            points.accrue_purchase(app, card, 20_000 + i, f"{device_id}-R-{i}")
    finally:
        app.close()
    assert kiosk(data, "ledger", "verify").returncode == 0
    return data


def refused(data: Path, *args: object) -> str:
    """Runs a restore that must be refused with one line, and returns that line."""
    before = device_files(data)
    had_replaced = (data / "replaced").exists()
    done = kiosk(data, "backup", "restore", *args)
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    line = done.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, done.stderr
    assert device_files(data) == before  # the same database, nothing moved, nothing created
    assert (data / "replaced").exists() == had_replaced  # and nothing new in it (above)
    assert not list(data.glob(".restore-*"))
    assert kiosk(data, "ledger", "verify").returncode == 0
    return line


def gzipped(plain: Path, into: Path) -> Path:
    backup = into / "ledger-S001-K001-20260302T020000000000Z.db.gz"
    into.mkdir(exist_ok=True)
    with plain.open("rb") as src, gzip.open(backup, "wb") as out:
        shutil.copyfileobj(src, out)
    return backup


def forged_manifest(backup: Path, **body: object) -> None:
    """A manifest in the backup's own format, as a technician could write by hand."""
    manifest = {
        "format": backups.FORMAT,
        "file": backup.name,
        "sha256": file_sha256(backup),
        "size": backup.stat().st_size,
        "created_at": "2026-03-02T02:00:00+00:00",
        "store_id": "S001",
        "device_id": "K001",
        "ledger_entries": 0,
        "members": 0,
        "schema_revision": None,
        **body,
    }
    backup.with_name(backup.name + ".json").write_text(json.dumps(manifest), encoding="utf-8")


def test_a_gzip_of_an_empty_file_is_refused_and_the_device_keeps_its_ledger(tmp_path):
    device = make_device(tmp_path, "k001", "K001")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    backup = gzipped(empty, tmp_path / "usb")
    # with its checksum typed in, as the restore once allowed without a manifest
    line = refused(device, backup, "--sha256", file_sha256(backup))
    assert "no manifest" in line
    # with a manifest written to fit it
    forged_manifest(backup)
    line = refused(device, backup)
    assert "not a kiosk ledger database: it is empty" in line


def test_another_programs_sqlite_database_is_refused(tmp_path):
    device = make_device(tmp_path, "k001", "K001")
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO member (name) VALUES ('someone')")
    conn.commit()
    backup = gzipped(foreign, tmp_path / "usb")
    forged_manifest(backup, members=1)
    line = refused(device, backup)
    assert "not a kiosk ledger database: it has no alembic_version, meta," in line
    # the kiosk's table names, at a schema revision this software never had
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('4f1e2d3c')")
    for table in ("meta", "card", "points_lot", "ledger_entry", "audit", "outbox"):
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    backup = gzipped(foreign, tmp_path / "usb")
    forged_manifest(backup, members=1, schema_revision="4f1e2d3c")
    line = refused(device, backup)
    assert "schema revision ['4f1e2d3c'] is not one of this software's" in line


def test_a_backup_that_is_not_what_its_manifest_says_is_refused(tmp_path):
    device = make_device(tmp_path, "k001", "K001")
    made = kiosk(device, "--json", "backup", "create")
    assert made.returncode == 0, made.stderr
    backup = Path(json.loads(made.stdout)["path"])
    # a manifest counting members the file does not hold
    reseal(backup, members=4)
    line = refused(device, backup)
    assert "holds 3 ledger entries and 3 members" in line and "manifest says 3, 4" in line
    # members and entries with the audit chain (and its head) taken out
    plain = tmp_path / "plain.db"
    with gzip.open(backup) as src, plain.open("wb") as out:
        shutil.copyfileobj(src, out)
    conn = sqlite3.connect(plain)
    conn.execute("DELETE FROM audit")
    conn.execute("DELETE FROM meta WHERE key = 'audit_head'")
    conn.commit()
    conn.close()
    with plain.open("rb") as src, gzip.open(backup, "wb") as out:
        shutil.copyfileobj(src, out)
    reseal(backup, members=3)
    line = refused(device, backup)
    assert "without an audit chain" in line


def test_another_devices_backup_is_refused_saying_how_to_replace_a_device(tmp_path):
    k001 = make_device(tmp_path, "k001", "K001", phones=2)
    k002 = make_device(tmp_path, "k002", "K002", phones=4)
    made = kiosk(k002, "--json", "backup", "create")
    assert made.returncode == 0, made.stderr
    backup = Path(json.loads(made.stdout)["path"])
    line = refused(k001, backup)
    assert "is the ledger of device K002 of store S001, and this is K001 of S001" in line
    assert "kiosk hq replace K002" in line
    assert len(dump(k001 / "kiosk.db", "member")) == 2


def _enrol(desk, data: Path, serial: str, issue) -> None:
    """A device in ``data`` prints its slip; HQ ``issue``s its bundle from it; it enrols."""
    from edge.provisioning.bundle import verify_enrolment
    from edge.provisioning.enrolment import apply_enrolment
    from edge.provisioning.pairing import start_pairing
    from edge.security.keys import load_public_key

    issued = issue(start_pairing(data, serial=serial).qr_text)
    hq_key = load_public_key(desk.settings.ca_dir / "hq-enrol.pub")
    apply_enrolment(data, verify_enrolment(issued.bundle_path.read_bytes(), hq_key))


def test_a_spare_enrolled_as_the_broken_devices_replacement_restores_its_backup(tmp_path):
    from tests.lifecycle.hq_desk import make_desk

    desk = make_desk(tmp_path, tmp_path / "ca")
    out = tmp_path / "bundles"
    broken = tmp_path / "broken"
    _enrol(desk, broken, "old", lambda qr: desk.enrol(qr, store_id="S001", out_dir=out))
    app = AppContext.open(broken)
    try:
        assert app.device_id == "K001"
        for i in range(3):
            card = members.register_member(app, f"1350013{i:04d}", True).card_no
            points.accrue_purchase(app, card, 30_000, f"OLD-{i}")
    finally:
        app.close()
    made = kiosk(broken, "--json", "backup", "create")
    assert made.returncode == 0, made.stderr
    backup = Path(json.loads(made.stdout)["path"])
    usb = tmp_path / "usb"
    usb.mkdir()
    for path in (backup, backup.with_name(backup.name + ".json")):
        shutil.copy2(path, usb / path.name)  # from HQ's copy, or the old device's card
    copied = usb / backup.name

    # a spare given another id cannot take the broken device's ledger
    other = tmp_path / "other"
    _enrol(
        desk,
        other,
        "spare-1",
        lambda qr: desk.replace("K001", qr, out_dir=out, device_id="K009", reason="broken"),
    )
    line = refused(other, copied)
    assert "device K001 of store S001, and this is K009 of S001" in line
    assert "kiosk hq replace K001" in line

    # the documented path: the spare takes the broken device's id, then its data key
    spare = tmp_path / "spare"
    _enrol(desk, spare, "spare-2", lambda qr: desk.replace("K001", qr, out_dir=out))
    shutil.copy2(broken / "keys" / "data.key", spare / "keys" / "data.key")
    done = kiosk(spare, "backup", "restore", copied)
    assert done.returncode == 0, done.stderr
    assert "(device K001, store S001)" in done.stdout and "warning" not in done.stdout
    for table in TABLES:
        assert dump(spare / "kiosk.db", table) == dump(broken / "kiosk.db", table), table
    assert kiosk(spare, "ledger", "verify").returncode == 0
    shown = kiosk(spare, "--json", "member", "show", "--phone", "13500130002")
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance"] > 0

    # a ledger enrolled as another device, its manifest rewritten to say K001
    k009 = kiosk(other, "--json", "backup", "create")
    assert k009.returncode == 0, k009.stderr
    forged = Path(json.loads(k009.stdout)["path"])
    renamed = usb / forged.name.replace("K009", "K001")
    shutil.copy2(forged, renamed)
    body = json.loads(forged.with_name(forged.name + ".json").read_text(encoding="utf-8"))
    forged_manifest(renamed, **{**body, "file": renamed.name, "device_id": "K001"})
    line = refused(spare, renamed)
    assert "names device K001 of store S001, but the ledger in it was last enrolled as K009" in line
