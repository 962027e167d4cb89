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

from edge.security.personal import TextVault
from hq.schema import upgrade
from hq.service import make_hq_engine

HQ_VAULT = TextVault(bytes(range(32)))
"""HQ's data key in the tests that drive HQ's ledger and feeds directly (a service opens its
own, :meth:`hq.service.HqConfig.personal_vault`)."""


@functools.cache
def hq_data_key_file() -> str:
    """A file holding :data:`HQ_VAULT`'s key (0600), for a service's ``data_key_file``: HQ's
    workers on one database share its data key, and tests read what they sealed."""
    path = Path(tempfile.mkdtemp(prefix="mck-hq-key-")) / "hq-data.key"
    path.write_bytes(bytes(range(32)))
    path.chmod(0o600)
    return str(path)


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
