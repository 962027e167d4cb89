"""HQ databases for the tests, brought to the current schema as `kiosk hq db upgrade` does.

The migrations run once per test process into a template SQLite file, which each test then
copies; PostgreSQL schemas are migrated each time (they start empty).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Engine

from hq.schema import upgrade
from hq.service import make_hq_engine


def migrated_engine(url: str) -> Engine:
    """An engine on the database at ``url``, its schema brought up to date."""
    engine = make_hq_engine(url)
    upgrade(engine)
    return engine


@functools.cache
def _template() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mck-hq-schema-")) / "hq.db"
    migrated_engine(f"sqlite+pysqlite:///{path}").dispose()
    return path


def sqlite_hq_url(path: Path) -> str:
    """The URL of a new HQ database at ``path`` (SQLite), at the current schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), path)
    return f"sqlite+pysqlite:///{path}"


def sqlite_hq_engine(path: Path) -> Engine:
    """An engine on a new HQ database at ``path`` (SQLite), at the current schema."""
    return make_hq_engine(sqlite_hq_url(path))
