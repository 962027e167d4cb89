"""Who may have the ledger's SQLite file open, and no commit into a file that is no longer it.

A restore puts another file in place of the ledger. SQLite knows nothing of that: a process
that opened the old file keeps writing into it (its descriptors follow the file to
``replaced/``), and one that closes it last may checkpoint it and delete ``<path>-wal`` by
name, which by then is the new ledger's. So a restore must be the only process with the file
open while it runs, and nothing may open it meanwhile.

Every connection an engine opens holds a shared ``flock`` on ``<database>.lock`` from before
SQLite opens the file until after SQLite has closed it; ``kiosk backup restore`` takes it
exclusively (:func:`try_exclusive`), so it waits for every connection to close, and a
connection opened meanwhile waits for the restore (up to the busy timeout, then
:class:`LedgerBusy`). A console command holds the lock from its first query until it has
printed its answer and closed the database, so an answer printed once a restore has finished
always speaks of the restored ledger. The touchscreen and the agent keep their connections
open, so a restore waits for them to be stopped. A second file, ``<database>.gate``, keeps a
stream of short-lived console commands from starving a restore: a connection passes through
the gate (shared, for an instant) before it takes its lock, and a restore closes the gate
(exclusive) before it waits for the connections already open (a process that holds one
already opens more without passing the gate: the restore is waiting for it anyway).

The guard behind the lock, for a file swapped by other means (by hand, say): each connection
records which file (device and inode) it opened, and each write transaction, once ``BEGIN
IMMEDIATE`` holds SQLite's write lock, checks that the path still names that file; if not,
nothing is written (:class:`LedgerReplaced`) and the connection is dropped, so the next
transaction opens the file now in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from edge.domain.errors import Refusal

LOCK_SUFFIX = ".lock"
GATE_SUFFIX = ".gate"
_INFO_KEY = "ledger_hold"
_POLL_S = 0.01


class LedgerBusy(Refusal):
    """The database stayed locked by a restore longer than the time allowed."""

    code = "ledger_busy"


class LedgerReplaced(Refusal):
    """The database file was replaced after this connection opened it; nothing was written."""

    code = "ledger_replaced"


def lock_file(database: Path) -> Path:
    return database.with_name(database.name + LOCK_SUFFIX)


def gate_file(database: Path) -> Path:
    return database.with_name(database.name + GATE_SUFFIX)


def remove_lock_files(database: Path) -> None:
    """Removes the lock files of a database that is gone (a restore's unpacked candidate)."""
    for path in (lock_file(database), gate_file(database)):
        path.unlink(missing_ok=True)


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names now; ``None`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _open(path: Path, *, create: bool) -> int:
    flags = os.O_CLOEXEC | (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY)
    try:
        return os.open(path, flags, 0o660)
    except PermissionError:
        if not create:
            raise
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # another user's lock file


def _flock(fd: int, mode: int, deadline: float) -> bool:
    """Takes ``mode`` on ``fd``, trying until ``deadline`` (monotonic); False if it never could."""
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)


_held: dict[Path, int] = {}  # shared locks this process holds, per database
_held_lock = threading.Lock()


def _count(database: Path, change: int) -> int:
    """Adds ``change`` to this process's shared locks on ``database``; the count before."""
    with _held_lock:
        before = _held.get(database, 0)
        _held[database] = before + change
        if not _held[database]:
            del _held[database]
        return before


@dataclass
class _Hold:
    """A connection's shared lock, and the file it opened."""

    database: Path
    fd: int
    opened: tuple[int, int] | None = None

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
            _count(self.database, -1)


def _take_shared(database: Path, timeout_s: float) -> _Hold | None:
    """A shared lock on ``database``'s lock file, through its gate.

    A process that already holds one (a second connection of its pool) skips the gate: a
    restore waits for that process anyway, and must not keep it from finishing.

    ``None`` when the lock files cannot be made (a directory that does not exist, a read-only
    one): SQLite then opens the file, or says why not, as it would without the lock.

    Raises:
        LedgerBusy: a restore kept it longer than ``timeout_s``.
    """
    try:
        fd = _open(lock_file(database), create=True)
    except OSError:
        return None
    try:
        gate = _open(gate_file(database), create=True)
    except OSError:
        os.close(fd)
        return None
    try:
        deadline = time.monotonic() + timeout_s
        through = _count(database, +1) > 0 or _flock(gate, fcntl.LOCK_SH, deadline)
        if not (through and _flock(fd, fcntl.LOCK_SH, deadline)):
            _count(database, -1)
            os.close(fd)
            raise LedgerBusy(
                f"the ledger database {database} is being restored (still locked after "
                f"{timeout_s:g} s): nothing was done; try again once the restore has finished",
                database=str(database),
            )
        return _Hold(database, fd)
    finally:
        os.close(gate)  # out of the gate: a restore may close it behind this connection


@contextlib.contextmanager
def shared(database: Path, timeout_s: float = 30.0) -> Iterator[None]:
    """The database's shared lock for a block that reads it without an engine (a backup copy).

    Raises:
        LedgerBusy: a restore kept it longer than ``timeout_s``.
    """
    hold = _take_shared(database, timeout_s)
    try:
        yield
    finally:
        if hold is not None:
            hold.release()


@dataclass
class ExclusiveHold:
    """The database to oneself: no connection is open, none opens until :meth:`release`."""

    gate: int
    lock: int

    def release(self) -> None:
        for fd in (self.lock, self.gate):
            if fd >= 0:
                os.close(fd)
        self.gate = self.lock = -1


def try_exclusive(database: Path, wait_s: float) -> ExclusiveHold | None:
    """Closes the gate and waits up to ``wait_s`` for the connections open to close.

    ``None`` (the gate open again) when they did not.
    """
    deadline = time.monotonic() + wait_s
    gate = _open(gate_file(database), create=True)
    try:
        lock = _open(lock_file(database), create=True)
    except OSError:
        os.close(gate)
        raise
    if _flock(gate, fcntl.LOCK_EX, deadline) and _flock(lock, fcntl.LOCK_EX, deadline):
        return ExclusiveHold(gate, lock)
    os.close(lock)
    os.close(gate)
    return None


def database_file(engine: Engine) -> Path | None:
    """The SQLite file ``engine`` opens (``None``: in memory, or not SQLite)."""
    name = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:"):  # an SQLite URI: its own rules
        return None
    return Path(name).absolute()


def guard(engine: Engine, timeout_s: float) -> None:
    """Makes every connection of ``engine`` hold its database's shared lock while it is open,
    and every write transaction check that it writes into the file the path names.

    To be called after the begin hook that issues ``BEGIN IMMEDIATE`` is registered.
    """
    database = database_file(engine)
    if database is None:
        return

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        hold = _take_shared(database, timeout_s)
        try:
            connection = dialect.connect(*cargs, **cparams)
        except BaseException:
            if hold is not None:
                hold.release()
            raise
        if hold is not None:
            hold.opened = file_identity(database)
            record.info[_INFO_KEY] = hold
        return connection

    @event.listens_for(engine, "close")
    def _close(dbapi_connection: Any, record: Any) -> None:
        hold = record.info.pop(_INFO_KEY, None)
        if hold is None:
            return
        try:
            # SQLite lets go of the file (its last connection may checkpoint) before the lock
            # is released: the pool's own close that follows finds it closed.
            dbapi_connection.close()
        finally:
            hold.release()

    @event.listens_for(engine, "begin")
    def _still_the_ledger(conn: Any) -> None:
        # after the begin hook of edge.storage.db: BEGIN IMMEDIATE holds the write lock
        if conn.get_execution_options().get("sqlite_begin", "IMMEDIATE") == "DEFERRED":
            return
        hold = conn.connection.info.get(_INFO_KEY)
        if hold is None or hold.opened is None or file_identity(database) == hold.opened:
            return
        conn.invalidate()  # rolled back and closed: the next transaction opens the new file
        raise LedgerReplaced(
            f"the ledger database {database} was replaced after this process opened it "
            "(a restore): nothing was written; run the command again",
            database=str(database),
        )
