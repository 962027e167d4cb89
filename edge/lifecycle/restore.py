"""``kiosk backup restore``: put a verified backup in place of the live ledger database.

A replacement device, or one whose SD card failed, comes back to the exact ledger state of
the backup. Nothing is replaced until the backup has passed its checksum, SQLite's integrity
check and the full ledger verification; the database it replaces is kept.
"""

from __future__ import annotations

import os
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
    database_path,
    integrity_problem,
    read_manifest,
    unpacked,
)
from edge.services.verify import VerifyReport, verify_ledger
from edge.storage.db import sqlite_url
from edge.storage.models import Member

REPLACED_DIR = "replaced"


@dataclass(frozen=True)
class RestoreResult:
    restored_from: Path
    database: Path
    replaced: list[Path]
    ledger_entries: int
    members: int
    audit_records: int
    warnings: list[str] = field(default_factory=list)


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


def _verify_candidate(
    candidate: Path, data_dir: Path, config: KioskConfig
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
        warnings = _key_warnings(app)
    finally:
        app.close()
    if not report.ok:
        raise IntegrityError(
            "backup failed ledger verification: " + "; ".join(report.problems[:5]),
            code="backup_invalid",
            problems=report.problems,
        )
    return report, warnings


def _key_warnings(app: AppContext) -> list[str]:
    """Whether this device's data key opens the backup's phone numbers."""
    warnings = []
    with app.db.read() as s:
        cipher = s.scalars(
            select(Member.phone_cipher).where(Member.phone_cipher.is_not(None))
        ).first()
    if cipher is not None:
        try:
            app.vault.decrypt(cipher)
        except IntegrityError:
            warnings.append(
                "phone numbers were sealed with another data key: install the original "
                "device's data.key and lookup.key (keys/ or systemd credentials)"
            )
    return warnings


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

    The SHA-256 is checked against ``expected_sha256`` or the manifest beside the file (one
    of them is required). The live database and its WAL files move to ``replaced/``.

    Raises:
        IntegrityError: the backup is damaged, altered or fails ledger verification.
        Refusal: the kiosk still has the database open, or work holds the update lock.
    """
    manifest = backup.with_name(backup.name + ".json")
    if expected_sha256 is None:
        if not manifest.exists():
            raise Refusal(
                f"no manifest {manifest.name} beside the backup; pass its SHA-256",
                code="backup_unchecked",
            )
        expected_sha256 = read_manifest(manifest).sha256
    actual = file_sha256(backup)
    if actual != expected_sha256.lower():
        raise IntegrityError(
            f"backup {backup.name} has SHA-256 {actual}, expected {expected_sha256}",
            code="backup_checksum",
        )
    live = database_path(config, data_dir)
    live.parent.mkdir(parents=True, exist_ok=True)
    users = _processes_using(live) if live.exists() else []
    if users:
        raise Refusal(
            f"processes {users} have {live} open: stop member-kiosk and member-kiosk-sync first",
            code="database_in_use",
        )
    with busy.exclusive(data_dir, timeout=lock_timeout), unpacked(backup, live.parent) as candidate:
        problem = integrity_problem(candidate)
        if problem is not None:
            raise IntegrityError(f"backup failed SQLite's integrity check: {problem}")
        report, warnings = _verify_candidate(candidate, data_dir, config)
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        replaced = []
        keep_dir = data_dir / REPLACED_DIR
        for suffix in ("", "-wal", "-shm"):
            old = live.with_name(live.name + suffix)
            if old.exists():
                keep_dir.mkdir(exist_ok=True, mode=0o750)
                kept = keep_dir / f"{live.stem}-{stamp}{live.suffix}{suffix}"
                os.replace(old, kept)
                replaced.append(kept)
        # the candidate's own WAL was checkpointed when its connections closed
        for suffix in ("-wal", "-shm"):
            candidate.with_name(candidate.name + suffix).unlink(missing_ok=True)
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
    )
