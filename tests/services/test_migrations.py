"""The migrations build exactly the schema the models describe, on an empty database."""

from __future__ import annotations

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
