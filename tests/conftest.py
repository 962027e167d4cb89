"""Fixtures shared by the core's tests: a real SQLite data directory and a clock tests move."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import KioskConfig, parse_config
from tests.disk import small_tmpfs
from tests.postgres import PostgresCluster, fresh_schema, postgres_cluster


class SteppingClock:
    """A clock that stands still until a test moves it (always UTC)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, to fill up (:func:`tests.disk.fill`); skipped where it cannot be mounted."""
    with small_tmpfs(tmp_path / "disk") as mount:
        yield mount


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """This test process's own throwaway PostgreSQL cluster, started when first asked for."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """A URL into a new, empty schema of the throwaway cluster, dropped after the test."""
    with fresh_schema(postgres.url) as url:
        yield url


@pytest.fixture
def clock() -> SteppingClock:
    # 10:00 in Shanghai on Monday 2 March 2026.
    return SteppingClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))


@pytest.fixture
def config() -> KioskConfig:
    return KioskConfig()


@pytest.fixture
def make_app(tmp_path: Path, clock: SteppingClock) -> Iterator:
    opened: list[AppContext] = []

    def make(toml: str = "", name: str = "data") -> AppContext:
        cfg = parse_config(toml) if toml else KioskConfig()
        app = AppContext.open(tmp_path / name, config=cfg, clock=clock)
        opened.append(app)
        return app

    yield make
    for app in opened:
        app.close()


@pytest.fixture
def app(make_app) -> AppContext:
    return make_app()


# ---- running the suite on several processes (pytest-xdist, as `make test` does) -----------
#
# `make test` hands out whole files (--dist loadfile): a file's tests share its fixtures (a
# console, releases built once, a broker with its agent) and run in its order, in one
# process. Files holding a long test go first, then the code quality gates (mypy alone takes
# a minute on a fresh clone), so that no process is left with a long file at the end while
# the other has nothing more to do.


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return  # one process: the files' own order
    long_files = {item.path for item in items if item.get_closest_marker("slow")}
    gates = Path(__file__).parent / "test_quality.py"
    items.sort(key=lambda item: 0 if item.path in long_files else 1 if item.path == gates else 2)
