"""The migrations build exactly the schema the models describe, on an empty database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from edge.storage import migrate
from edge.storage.db import make_engine, sqlite_url
from edge.storage.models import Base


def test_migrations_match_the_models(tmp_path):
    engine = make_engine(sqlite_url(tmp_path / "m.db"))
    before, after = migrate.upgrade(engine)
    assert (before, after) == (None, migrate.head_revision())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert migrate.upgrade(engine) == (after, after)  # running it again changes nothing
    engine.dispose()


def test_wal_and_full_sync_are_on(tmp_path):
    engine = make_engine(sqlite_url(tmp_path / "m.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_the_start_up_check_agrees_with_alembic(tmp_path):
    from alembic.script import ScriptDirectory

    assert (
        migrate.head_revision() == ScriptDirectory.from_config(migrate._config()).get_current_head()
    )
    engine = make_engine(sqlite_url(tmp_path / "m.db"))
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine, "0001")
    with engine.connect() as conn:
        alembic_says = MigrationContext.configure(conn).get_current_revision()
    assert migrate.current_revision(engine) == alembic_says == "0001"
    engine.dispose()


def test_opening_a_current_database_does_not_import_alembic(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from edge.app import AppContext; "
        f"AppContext.open(Path({str(tmp_path)!r})).close(); "
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))"
    )

    def loaded() -> str:
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert "alembic" in loaded()  # the empty database needed its migrations
    assert loaded() == "[]"


def test_opening_the_data_directory_does_not_wait_for_a_writer(tmp_path):
    import sqlite3

    from edge.app import AppContext
    from edge.config import DatabaseConfig, KioskConfig

    AppContext.open(tmp_path).close()
    writer = sqlite3.connect(tmp_path / "kiosk.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        config = KioskConfig(database=DatabaseConfig(busy_timeout_ms=300))
        app = AppContext.open(tmp_path, config=config)  # would time out if it took the lock
        app.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_the_ledger_gives_up_its_nonce_table_and_gets_it_back_on_downgrade(tmp_path):
    from alembic import command
    from sqlalchemy import inspect

    engine = make_engine(sqlite_url(tmp_path / "m.db"))
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO used_code_nonce (nonce, expires_at) VALUES ('00ff', '2026-03-02 02:00:00')"
        )
    migrate.upgrade(engine, "0005")
    assert "used_code_nonce" not in inspect(engine).get_table_names()
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "used_code_nonce" in inspect(engine).get_table_names()
    engine.dispose()


def test_0015_encrypts_the_names_and_birthdays_kept_before(tmp_path):
    """A ledger holding names and birthdays in clear has them encrypted in place with the
    device's data key; without the key the upgrade refuses and leaves the database as it was."""
    import sqlite3
    from datetime import date

    from edge.domain.errors import KioskError
    from edge.security.personal import TextVault

    db_path = tmp_path / "m.db"
    engine = make_engine(sqlite_url(db_path))
    migrate.upgrade(engine, "0013")
    at = "2026-03-02 02:00:00.000000"
    with engine.begin() as conn:
        for member_id, name, birthday in (
            ("M1", "欧阳秀英", "1950-03-09"),
            ("M2", None, "1961-11-30"),
            ("M3", "李四", None),
        ):
            conn.exec_driver_sql(
                "INSERT INTO member (id, phone_masked, name, birthday, consent_version, "
                "consented_at, tier, tier_review_at, balance, overdraft_flagged, store_id, "
                "created_at, updated_at) VALUES (?, '', ?, ?, 'v1', ?, 'normal', ?, 0, 0, "
                "'S001', ?, ?)",
                (member_id, name, birthday, at, at, at, at),
            )
        conn.exec_driver_sql(  # a card holds the member: the columns go without a rebuild
            "INSERT INTO card (card_no, member_id, state, card_type, issued_at, "
            "state_changed_at, device_id) VALUES ('2900000000018', 'M1', 'active', 'physical', "
            "?, ?, 'K001')",
            (at, at),
        )
    with pytest.raises(KioskError) as refused:
        migrate.upgrade(engine)
    assert refused.value.code == "key_missing"
    assert migrate.current_revision(engine) == "0013"
    vault = TextVault(bytes(range(32)))
    migrate.upgrade(engine, vault=lambda: vault)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()
    raw = sqlite3.connect(db_path)
    try:
        query = "SELECT id, name_cipher, birthday_cipher FROM member ORDER BY id"
        rows = raw.execute(query).fetchall()
    finally:
        raw.close()
    stored = b"".join(v for row in rows for v in row if isinstance(v, bytes))
    for clear in ("欧阳秀英".encode(), "李四".encode(), b"1950-03-09", b"1961-11-30"):
        assert clear not in stored
    assert [(i, vault.decrypt_name(n), vault.decrypt_birthday(b)) for i, n, b in rows] == [
        ("M1", "欧阳秀英", date(1950, 3, 9)),
        ("M2", None, date(1961, 11, 30)),
        ("M3", "李四", None),
    ]
