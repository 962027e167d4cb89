"""``kiosk backup restore``: put a verified backup of this device in place of its live ledger.

A replacement device, or one whose SD card failed, comes back to the exact ledger state of
the backup. Nothing is moved or created until the backup has proved that it is this
appliance's ledger, whole:

- its manifest (the ``.json`` beside it) is there, its SHA-256 and size are the file's, and
  it names this device and store (a device restores only its own ledger: a replacement is
  enrolled under the broken device's id first);
- the file is an SQLite database passing the integrity check, with the kiosk's tables at a
  schema revision this software knows (an empty or foreign database is refused, never given
  empty tables), holding the ledger entries, members and revision the manifest counts;
- the full ledger verification passes, the audit chain up to the head kept in ``meta``
  included, and the device its enrolment records name is the manifest's.

The restore is the only user of the ledger while it runs: it waits for every connection to
the database to close, and no process opens it until the restore has finished
(:mod:`edge.storage.ledger_lock`); work that holds the update lock (a print, a dispense, the
daily expiry) is waited for too. The database it replaces is kept in ``replaced/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import IntegrityError, KioskError, Refusal
from edge.files import file_sha256, fsync_directory
from edge.lifecycle import busy
from edge.lifecycle.backup import (
    BackupInfo,
    database_path,
    integrity_problem,
    read_manifest,
    unpacked,
)
from edge.provisioning.history import APPLIED
from edge.services.personal import name_of
from edge.services.verify import VerifyReport, verify_ledger
from edge.storage import ledger_lock, migrate
from edge.storage.db import sqlite_url
from edge.storage.models import AuditRecord, Member

REPLACED_DIR = "replaced"
KIOSK_TABLES = (
    migrate.VERSION_TABLE,
    "meta",
    "member",
    "card",
    "points_lot",
    "ledger_entry",
    "audit",
    "outbox",
)
_RETRY_S = 0.05


@dataclass(frozen=True)
class RestoreResult:
    restored_from: Path
    database: Path
    replaced: list[Path]
    ledger_entries: int
    members: int
    audit_records: int
    warnings: list[str] = field(default_factory=list)
    device_id: str = ""
    store_id: str = ""


def _processes_using(path: Path) -> list[int]:
    """Other processes with ``path`` open (Linux ``/proc``); the kiosk must be stopped first."""
    me = os.getpid()
    target = str(path.resolve())
    users = []
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == me:
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link == target or link.startswith(target + "-") for link in links):
            users.append(int(proc.name))
    return users


def _in_use(live: Path, users: list[int]) -> Refusal:
    return Refusal(
        f"processes {users} have {live} open: stop member-kiosk and member-kiosk-sync first",
        code="database_in_use",
        processes=users,
    )


@contextlib.contextmanager
def _sole_user(live: Path, data_dir: Path, timeout: float) -> Iterator[None]:
    """The ledger to this process alone, and no print, dispense or expiry in progress.

    Both locks or neither: the update lock is only tried while the ledger's is held, so a
    process holding one and waiting for the other (an update that opens the ledger) is never
    waited for in turn.

    Raises:
        Refusal: ``database_in_use``: a process kept the ledger open for ``timeout`` seconds
            (the touchscreen or the agent still running); ``busy``: work kept the update lock.
    """
    deadline = time.monotonic() + timeout
    while True:
        waited: busy.LockTimeout | None = None
        hold = ledger_lock.try_exclusive(live, max(deadline - time.monotonic(), 0))
        if hold is not None:
            stack = contextlib.ExitStack()
            stack.callback(hold.release)
            try:
                stack.enter_context(busy.exclusive(data_dir, timeout=0, what="restore"))
            except busy.LockTimeout as exc:
                stack.close()
                waited = exc
            else:
                with stack:
                    yield
                return
        if time.monotonic() >= deadline:
            if waited is not None:
                raise Refusal(
                    f"the appliance stayed busy for {timeout:g} s "
                    f"({waited.details.get('in_progress', 'unknown work')}): nothing was restored",
                    code="busy",
                )
            users = _processes_using(live)
            if users:
                raise _in_use(live, users)
            raise Refusal(
                f"{live} stayed in use for {timeout:g} s: nothing was restored",
                code="database_in_use",
            )
        time.sleep(_RETRY_S)


def _manifest_of(backup: Path) -> BackupInfo:
    manifest = backup.with_name(backup.name + ".json")
    if not manifest.exists():
        raise Refusal(
            f"no manifest {manifest.name} beside the backup: copy it with the backup "
            "(HQ keeps it beside each backup); nothing was restored",
            code="backup_unchecked",
        )
    info = read_manifest(manifest)
    if info.path.name != backup.name:
        raise IntegrityError(
            f"manifest {manifest.name} describes {info.path.name}", code="backup_mismatch"
        )
    return info


def _check_file(backup: Path, info: BackupInfo, expected_sha256: str | None) -> None:
    actual = file_sha256(backup)
    for expected in (info.sha256, expected_sha256):
        if expected is not None and actual != expected.strip().lower():
            raise IntegrityError(
                f"backup {backup.name} has SHA-256 {actual}, expected {expected}: "
                "nothing was restored",
                code="backup_checksum",
            )
    size = backup.stat().st_size
    if size != info.size:
        raise IntegrityError(
            f"backup {backup.name} is {size} bytes, its manifest says {info.size}",
            code="backup_mismatch",
        )


def _check_device(backup: Path, info: BackupInfo, config: KioskConfig) -> None:
    """A device restores its own ledger only; a replacement takes the broken one's id first."""
    device = config.device
    if (info.device_id, info.store_id) == (device.device_id, device.store_id):
        return
    raise Refusal(
        f"backup {backup.name} is the ledger of device {info.device_id} of store "
        f"{info.store_id}, and this is {device.device_id} of {device.store_id}: nothing was "
        f"restored. A device restores only its own backups; to replace {info.device_id}, "
        f"enrol this device as its replacement first (at HQ: kiosk hq replace "
        f"{info.device_id} <this device's pairing slip>, keeping its id)",
        code="backup_other_device",
        backup_device_id=info.device_id,
        backup_store_id=info.store_id,
    )


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory(str(migrate.MIGRATIONS)).walk_revisions()}


def _check_schema(candidate: Path, info: BackupInfo) -> None:
    """The kiosk's own tables at a revision this software knows, holding what the manifest
    counts (before anything opens the file as a kiosk database, which would create them)."""
    not_ledger = "backup is not a kiosk ledger database"
    with contextlib.closing(sqlite3.connect(f"file:{candidate}?mode=ro", uri=True)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            raise IntegrityError(f"{not_ledger}: it is empty", code="backup_not_ledger")
        missing = [t for t in KIOSK_TABLES if t not in tables]
        if missing:
            raise IntegrityError(
                f"{not_ledger}: it has no {', '.join(missing)} table", code="backup_not_ledger"
            )
        revisions = [r[0] for r in conn.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}")]
        if len(revisions) != 1 or revisions[0] not in _known_revisions():
            raise IntegrityError(
                f"{not_ledger}: its schema revision {revisions} is not one of this software's",
                code="backup_not_ledger",
            )
        entries = conn.execute("SELECT count(*) FROM ledger_entry").fetchone()[0]
        members = conn.execute("SELECT count(*) FROM member").fetchone()[0]
    found = (entries, members, revisions[0])
    said = (info.ledger_entries, info.members, info.schema_revision)
    if found != said:
        raise IntegrityError(
            f"the backup holds {entries} ledger entries and {members} members at schema "
            f"{revisions[0]}, its manifest says {said[0]}, {said[1]} at {said[2]}",
            code="backup_mismatch",
        )


def _verify_candidate(
    candidate: Path, data_dir: Path, config: KioskConfig, info: BackupInfo
) -> tuple[VerifyReport, list[str]]:
    """Opens the candidate as a kiosk database (migrating an older schema) and verifies it."""
    cfg = config.model_copy(
        update={"database": config.database.model_copy(update={"url": sqlite_url(candidate)})}
    )
    try:
        app = AppContext.open(data_dir, config=cfg)
    except KioskError:
        raise
    except Exception as exc:  # alembic or SQLAlchemy refusing a database from elsewhere
        raise IntegrityError(f"backup is not a kiosk database: {exc}") from None
    try:
        report = verify_ledger(app)
        if report.ok and (report.entries or report.members) and not report.audit_records:
            report.breach("members and ledger entries without an audit chain")
        if not report.ok:
            raise IntegrityError(
                "backup failed ledger verification: " + "; ".join(report.problems[:5]),
                code="backup_invalid",
                problems=report.problems,
            )
        _check_enrolment(app, info)
        warnings = _key_warnings(app)
    finally:
        app.close()
    return report, warnings


def _check_enrolment(app: AppContext, info: BackupInfo) -> None:
    """The identity the ledger's own (verified) enrolment records give is the manifest's."""
    with app.db.read() as s:
        detail = s.scalar(
            select(AuditRecord.detail)
            .where(AuditRecord.action.in_(APPLIED))
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        )
    if detail is None:
        return  # never enrolled (a bench or demo device): the manifest is all there is
    enrolled = json.loads(detail)
    identity = (enrolled.get("device_id"), enrolled.get("store_id"))
    if identity != (info.device_id, info.store_id):
        raise IntegrityError(
            f"the backup's manifest names device {info.device_id} of store {info.store_id}, "
            f"but the ledger in it was last enrolled as {identity[0]} of {identity[1]}",
            code="backup_mismatch",
        )


def _key_warnings(app: AppContext) -> list[str]:
    """Whether this device's data key opens the backup's phone numbers and names (a store's
    replica of other stores' members holds names without phones)."""
    warnings = []
    with app.db.read() as s:
        cipher = s.scalars(
            select(Member.phone_cipher).where(Member.phone_cipher.is_not(None))
        ).first()
        held = s.scalars(select(Member).where(Member.name_cipher.is_not(None))).first()
        try:
            if cipher is not None:
                app.vault.decrypt(cipher)
            if held is not None:
                name_of(app, held)
        except IntegrityError:
            warnings.append(
                "phone numbers and names were sealed with another data key: install the original "
                "device's data.key and lookup.key (keys/ or systemd credentials)"
            )
    return warnings


def _kept_name(keep_dir: Path, live: Path, now: datetime) -> Path:
    """Where the replaced database goes: ``kiosk-<time>.db``, never over an earlier one."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        name = f"{live.stem}-{stamp}{'' if n == 1 else f'-{n}'}{live.suffix}"
        if not any(keep_dir.glob(f"{name}*")):
            return keep_dir / name
    raise Refusal(f"{keep_dir} is full of databases replaced at {stamp}", code="replaced_full")


def restore_backup(
    backup: Path,
    data_dir: Path,
    config: KioskConfig,
    *,
    expected_sha256: str | None = None,
    lock_timeout: float = 60.0,
    now: datetime | None = None,
) -> RestoreResult:
    """Verify ``backup`` and make it the live database of ``data_dir``.

    The manifest beside the file is required; ``expected_sha256``, when given, must match
    too. The live database and its WAL files move to ``replaced/``.

    Raises:
        IntegrityError: the backup is damaged, altered, not a kiosk ledger, not what its
            manifest says, or fails ledger verification.
        Refusal: no manifest; another device's backup; the ledger stayed open (the kiosk
            still running) or work held the update lock for ``lock_timeout`` seconds.
    """
    info = _manifest_of(backup)
    _check_file(backup, info, expected_sha256)
    _check_device(backup, info, config)
    live = database_path(config, data_dir)
    live.parent.mkdir(parents=True, exist_ok=True)
    with _sole_user(live, data_dir, lock_timeout):
        users = _processes_using(live) if live.exists() else []
        if users:  # opened without the ledger's lock (sqlite3 by hand, say)
            raise _in_use(live, users)
        with unpacked(backup, live.parent) as candidate:
            try:
                problem = integrity_problem(candidate)
                if problem is not None:
                    raise IntegrityError(
                        f"backup failed SQLite's integrity check: {problem}",
                        code="backup_not_ledger",
                    )
                _check_schema(candidate, info)
                report, warnings = _verify_candidate(candidate, data_dir, config, info)
            finally:
                ledger_lock.remove_lock_files(candidate)
                for suffix in ("-wal", "-shm"):  # checkpointed when its connections closed
                    candidate.with_name(candidate.name + suffix).unlink(missing_ok=True)
            keep = _kept_name(data_dir / REPLACED_DIR, live, now or datetime.now(UTC))
            replaced = []
            for suffix in ("", "-wal", "-shm"):
                old = live.with_name(live.name + suffix)
                if old.exists():
                    keep.parent.mkdir(exist_ok=True, mode=0o750)
                    kept = keep.with_name(keep.name + suffix)
                    os.replace(old, kept)
                    replaced.append(kept)
            os.replace(candidate, live)
            fsync_directory(live.parent)
    return RestoreResult(
        restored_from=backup,
        database=live,
        replaced=replaced,
        ledger_entries=report.entries,
        members=report.members,
        audit_records=report.audit_records,
        warnings=warnings,
        device_id=info.device_id,
        store_id=info.store_id,
    )
