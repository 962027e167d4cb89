"""Opening the SQLite ledger: WAL, synchronous=FULL, BEGIN IMMEDIATE for writes, busy timeout.

pysqlite's default deferred ``BEGIN`` lets two writers both read, then one fails with
"database is locked" on upgrade; taking the write lock at ``BEGIN IMMEDIATE`` makes writers
queue on the busy timeout instead, so every read-modify-write is isolated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from edge.domain.errors import DiskFull
from edge.storage import ledger_lock
from edge.storage.space import disk_full_mapped, out_of_space


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def make_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    """An engine for ``url``; for SQLite, with the appliance's durability settings."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url,
        connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql("BEGIN" if mode == "DEFERRED" else "BEGIN IMMEDIATE")

    # no connection while a restore swaps the file, no commit into a file swapped since
    ledger_lock.guard(engine, busy_timeout_ms / 1000)

    database = engine.url.database
    where = Path(database).resolve().parent if database and database != ":memory:" else None

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # Every statement, commit and connect (its PRAGMAs open the -shm file) of every
        # caller, migrations and raw reads included: a full disk is DiskFull, never an
        # OperationalError. SQLite rolls the failed statement or commit back.
        if out_of_space(context.original_exception, where):
            raise DiskFull(where=str(where or "")) from context.original_exception

    return engine


class Database:
    """The engine plus two ways in: a write transaction and a read-only snapshot."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        # where the file lives, for telling a full disk from another I/O error
        self.directory = (
            Path(database).resolve().parent if database and database != ":memory:" else None
        )
        self._writer = sessionmaker(engine, expire_on_commit=False)
        self._read_engine = engine.execution_options(sqlite_begin="DEFERRED")
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction holding the write lock from its first statement; commit or roll back.

        Raises:
            DiskFull: the disk is full (rolled back: nothing was changed).
        """
        with disk_full_mapped(self.directory), self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A consistent snapshot for lookups; never takes the write lock.

        Raises:
            DiskFull: the disk is too full to open the database (its ``-shm`` file).
        """
        with disk_full_mapped(self.directory), self._reader() as session, session.begin():
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """The snapshot of :meth:`read` on a Core connection, without an ORM session.

        For the hottest lookups (a member by card, phone or code): with a statement built
        once, it costs about half of a session's read.

        Raises:
            DiskFull: the disk is too full to open the database (its ``-shm`` file).
        """
        with disk_full_mapped(self.directory), self._read_engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        self.engine.dispose()
