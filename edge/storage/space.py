"""Telling a full disk from other failures, for every write: SQLite's, and the files'.

SQLite says "database or disk is full" (``SQLITE_FULL``) when a write finds no space, but a
``-shm`` file or a journal it could not create or grow is an ``SQLITE_IOERR_*`` ("disk I/O
error") with no OS error attached; such an error while the file system has (almost) no space
left is the disk being full too.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from edge.domain.errors import DiskFull

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
NEARLY_FULL_BYTES = 1 << 20
"""An SQLite I/O error with less free space than this where the file lives: a full disk."""


def out_of_space(exc: BaseException, where: Path | None = None) -> bool:
    """Whether ``exc`` is the disk being full: ``ENOSPC`` or ``EDQUOT``, SQLite's
    ``SQLITE_FULL``, or an SQLite I/O error while the file system holding ``where`` has
    (almost) no free space left."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if primary == _SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN) or "disk I/O error" in str(exc):
        return where is not None and free_bytes(where) < NEARLY_FULL_BYTES
    return False


def free_bytes(where: Path) -> int:
    """Free bytes for this process on the file system of ``where`` (or its nearest parent)."""
    for path in (where, *where.parents):
        try:
            return shutil.disk_usage(path).free
        except OSError:
            continue
    return NEARLY_FULL_BYTES  # nothing to measure: not known to be full


@contextmanager
def disk_full_mapped(where: Path | None, not_done: str = "") -> Iterator[None]:
    """Turns the disk being full (see :func:`out_of_space`) into :class:`DiskFull`.

    ``not_done`` says what was not done (the :class:`DiskFull`'s own words when empty).
    """
    try:
        yield
    except (DBAPIError, sqlite3.Error, OSError) as exc:
        if out_of_space(exc, where):
            raise DiskFull(not_done, where=str(where) if where is not None else "") from exc
        raise
