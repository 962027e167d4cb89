"""HQ's schema is made and changed by its own migrations only, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from edge.domain.errors import KioskError
from hq.models import HqBase
from hq.schema import HQ_SCHEMA, upgrade
from hq.service import HqConfig, HqService, make_hq_engine

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


def _hq(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KIOSK, "hq", "--db", db, *args], capture_output=True, text=True, timeout=120
    )


def test_an_operator_upgrades_hq_before_serving(tmp_path: Path):
    db = f"sqlite+pysqlite:///{tmp_path / 'hq.db'}"
    served = _hq(db, "serve")
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
