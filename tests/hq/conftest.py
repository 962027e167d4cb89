"""HQ's tests share the sync tests' real broker (Mosquitto with the shipped TLS and ACL), and
run HQ's storage on both its engines: SQLite, and PostgreSQL (the tests' own throwaway
cluster, each test with its own schema migrated as `kiosk hq db upgrade` does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.hq.database import migrated_engine, sqlite_hq_engine
from tests.sync.conftest import broker

__all__ = ["broker"]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        e = sqlite_hq_engine(tmp_path / "hq.db")
    else:
        e = migrated_engine(request.getfixturevalue("postgres_url"))
    yield e
    e.dispose()
