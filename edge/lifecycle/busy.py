"""The update lock: work that must not be cut short holds it shared, the updater exclusively.

A print, a card dispense or the daily expiry wraps itself in :func:`hold`; any number of them
can run at once. ``kiosk update`` and ``kiosk backup restore`` take the same lock exclusively
(:func:`exclusive`), so they wait until nothing is in progress, and new work waits (or gives
up after its timeout) while they run. An update takes it only to stop, switch and restart:
it installs the new version before, while work goes on, holding :func:`installing` (one
update at a time) instead. The lock is an ``fcntl`` lock on
``<data dir>/update.lock``: the kernel drops it when a holder dies, so a crashed process never
leaves the appliance locked.

Database transactions do not take it: every connection to the ledger holds the ledger's own
lock while it is open (:mod:`edge.storage.ledger_lock`), which a restore takes exclusively
as well, so no process, console command or service, has the ledger open while it is swapped.

Example::

    with busy.hold("print gift voucher", app.data_dir):
        printer.print_receipt(voucher)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edge.config import default_data_dir
from edge.domain.errors import KioskError

LOCK_FILE = "update.lock"
HOLDERS_DIR = "busy"
_POLL_S = 0.05
_counter = 0
_counter_lock = threading.Lock()


class LockTimeout(KioskError):
    """The update lock was not free within the time allowed."""

    code = "busy"


def lock_path(data_dir: Path | None = None) -> Path:
    return (data_dir if data_dir is not None else default_data_dir()) / LOCK_FILE


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)


def _acquire(fd: int, mode: int, timeout: float | None, what: str) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(f"{what}: still busy after {timeout:g} s") from None
            time.sleep(_POLL_S)


def _next_id() -> int:
    global _counter  # noqa: PLW0603  (a process-wide sequence for holder file names)
    with _counter_lock:
        _counter += 1
        return _counter


@contextlib.contextmanager
def hold(
    reason: str, data_dir: Path | None = None, *, timeout: float | None = None
) -> Iterator[None]:
    """Hold the update lock shared for the duration of the block.

    Args:
        reason: what is in progress, in a few words; an update waiting on it reports it.
        data_dir: the appliance's data directory (default: the configured one).
        timeout: seconds to wait while an update holds the lock; ``None`` waits for ever.

    Raises:
        LockTimeout: an update kept the lock longer than ``timeout``.
    """
    path = lock_path(data_dir)
    # Each hold has its own descriptor: flock locks belong to the open file, so two holds in
    # one process are two shared locks, and an exclusive one elsewhere waits for both.
    fd = _open(path)
    marker = path.parent / HOLDERS_DIR / f"{os.getpid()}-{_next_id()}"
    try:
        _acquire(fd, fcntl.LOCK_SH, timeout, f"waiting for an update before {reason!r}")
        with contextlib.suppress(OSError):
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(reason, encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
        os.close(fd)


def in_progress(data_dir: Path | None = None) -> list[str]:
    """What holders say they are doing (only live processes count)."""
    holders = lock_path(data_dir).parent / HOLDERS_DIR
    found = []
    for marker in sorted(holders.glob("*-*")) if holders.is_dir() else []:
        pid_text = marker.name.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                marker.unlink()  # its process died; the kernel already freed its lock
            continue
        except PermissionError:
            pass  # alive, another user's
        with contextlib.suppress(OSError):
            found.append(marker.read_text(encoding="utf-8"))
    return found


@contextlib.contextmanager
def exclusive(
    data_dir: Path | None = None, *, timeout: float | None = None, what: str = "update"
) -> Iterator[None]:
    """Hold the lock exclusively: no print, dispense or expiry runs meanwhile.

    Args:
        what: the work that needs it, as the message names it when it gives up.

    Raises:
        LockTimeout: work in progress kept the lock longer than ``timeout``; the message says
            what it was.
    """
    path = lock_path(data_dir)
    fd = _open(path)
    try:
        try:
            _acquire(fd, fcntl.LOCK_EX, timeout, what)
        except LockTimeout:
            busy = ", ".join(in_progress(data_dir)) or "unknown work"
            raise LockTimeout(
                f"the appliance stayed busy for {timeout:g} s ({busy}); {what} postponed",
                in_progress=busy,
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def installing(lock_file: Path, *, timeout: float | None = None) -> Iterator[None]:
    """One update at a time: held for an update's whole run, install and switch, and by
    ``kiosk cleanup`` while it removes old versions. It keeps nothing else waiting (an install
    runs while prints and dispenses go on). ``lock_file`` lies in the install root.

    Raises:
        LockTimeout: another update kept it longer than ``timeout``.
    """
    fd = _open(lock_file)
    try:
        _acquire(fd, fcntl.LOCK_EX, timeout, "another update is being installed")
        yield
    finally:
        os.close(fd)
