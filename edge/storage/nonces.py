"""The member-code replay guard: nonces already used, in their own SQLite file beside the ledger.

A signed member code may identify a member once (:mod:`edge.security.codes`). Its nonce is
recorded here with one ``INSERT`` on a primary key, so checking and recording are one atomic
statement: of two processes (the touchscreen and a console command) or two threads presenting
the same code at once, exactly one inserts the row and the other gets the duplicate-key error,
which is the replay. Nothing is read first, so there is no window between a check and a write.

Durability. The file is in WAL mode with ``synchronous=NORMAL``: a commit is in the WAL, handed
to the operating system, but not fsynced. It survives a crash or kill of any process (every
other connection, and the next process, reads it from the WAL). Only a power cut or a kernel
crash can lose commits: those not yet on the storage, i.e. made since SQLite last synced the
WAL (at a checkpoint, after at most about a thousand commits) and not yet written back by the
kernel on its own (Linux's default: within about 30 s). A code used in the last moments before
a power cut may therefore be accepted once more after the kiosk comes back, while it is still
fresh: up to ``ttl`` after HQ minted it by the kiosk's clock (60 s with the defaults), less
the time the kiosk takes to boot and start again. In exchange an identification by code pays
no fsync (a few milliseconds on an SD card) and never waits for the ledger's write lock, which
the sync agent and every use case queue for; the ledger itself stays ``synchronous=FULL``.

The file holds nothing but nonces that expire within minutes: it is not part of a ledger
backup, a restore leaves it as it is, and deleting it only forgets which codes of the last few
minutes were used. Expired nonces are pruned at most once a minute per process, not on every
identification.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge.domain.clock import ensure_utc
from edge.storage.space import disk_full_mapped

NONCE_FILE = "nonces.db"
PRUNE_INTERVAL_S = 60.0
NOT_CLAIMED = "the member code was not accepted (use the card or the phone number)"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS used_code_nonce ("
    " nonce TEXT PRIMARY KEY NOT NULL,"
    " expires_at INTEGER NOT NULL"  # unix seconds
    ") WITHOUT ROWID"
)


class UsedNonces:
    """The nonces of member codes already used; one per process, shared by its threads.

    The file is opened on first use, so a process that never sees a member code never
    creates it.
    """

    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int = 30_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._next_prune = 0.0  # monotonic time of the next prune; 0: at the first claim

    def claim(self, nonce: str, expires_at: datetime, now: datetime) -> bool:
        """Records ``nonce`` as used until ``expires_at``; False when it already was (a replay).

        ``now`` is the caller's clock, only for pruning the nonces that expired before it.

        Raises:
            DiskFull: the disk is too full to record the nonce: the code is not accepted (it
                could otherwise be used again), and nothing was changed.
        """
        until = int(ensure_utc(expires_at).timestamp())
        with self._lock, disk_full_mapped(self.path.parent, NOT_CLAIMED):
            conn = self._connection()
            if self._monotonic() >= self._next_prune:
                conn.execute(
                    "DELETE FROM used_code_nonce WHERE expires_at < ?",
                    (int(ensure_utc(now).timestamp()),),
                )
                self._next_prune = self._monotonic() + PRUNE_INTERVAL_S
            try:
                conn.execute(
                    "INSERT INTO used_code_nonce (nonce, expires_at) VALUES (?, ?)", (nonce, until)
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def __contains__(self, nonce: str) -> bool:
        """Whether ``nonce`` is recorded (expired or not); for tests and diagnostics."""
        with self._lock:
            found = self._connection().execute(
                "SELECT 1 FROM used_code_nonce WHERE nonce = ?", (nonce,)
            )
            return found.fetchone() is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Puts the file in WAL mode. Two processes opening a new file at once both try to,
        and SQLite refuses the second at once ("database is locked") instead of waiting its
        busy timeout: the second tries again until the first has done it."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # Autocommit: each statement is its own transaction, committed when it returns.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                mode = self._wal(conn)
                if mode != "wal":
                    raise sqlite3.OperationalError(f"{self.path}: journal mode {mode}, not wal")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn
