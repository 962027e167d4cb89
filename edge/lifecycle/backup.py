"""Online backups of the ledger database, kept with rotation on the device.

A backup is a gzip of a consistent SQLite copy made with the online backup API while the kiosk
keeps writing (WAL readers do not block writers), plus a JSON manifest beside it with the
copy's SHA-256, what it holds and whose it is; the pair is what a restore needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import shutil
import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.config import KioskConfig
from edge.domain.errors import ConfigError, DiskFull, IntegrityError
from edge.files import file_sha256, fsync_directory
from edge.storage import ledger_lock
from edge.storage.space import out_of_space

BACKUP_DIR = "backups"
FORMAT = 1
_SUFFIX = ".db.gz"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupInfo:
    """One backup on disk and what its manifest says."""

    path: Path
    manifest: Path
    sha256: str
    size: int
    created_at: datetime
    store_id: str
    device_id: str
    ledger_entries: int
    members: int
    schema_revision: str | None
    delivered_at: datetime | None = None
    """When HQ acknowledged holding a byte-identical copy (``None``: not yet)."""


def database_path(config: KioskConfig, data_dir: Path) -> Path:
    """The SQLite file the configuration points at (only SQLite databases are backed up here)."""
    url = config.database.url
    if not url:
        return data_dir / "kiosk.db"
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    raise ConfigError(f"database {url!r} is not SQLite: back it up with its own tools")


def _stats(conn: sqlite3.Connection) -> tuple[int, int, str | None]:
    def count(table: str) -> int:
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # an empty database: no schema yet
            return 0

    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        row = None
    return count("ledger_entry"), count("member"), (row[0] if row else None)


def integrity_problem(db_file: Path) -> str | None:
    """``None`` when SQLite's full integrity check passes, else what it found."""
    try:
        conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    result = "; ".join(str(r[0]) for r in rows)
    return None if result == "ok" else result


def snapshot(db_path: Path, dest: Path) -> None:
    """A consistent copy of the live database at ``dest`` (a single-file database, no WAL).

    The backup API copies every page in one step inside one read transaction, so the copy is
    the database as of one commit, whatever the kiosk writes meanwhile. It holds the ledger's
    shared lock like any connection, so it never copies a file a restore is replacing.
    """
    if not db_path.exists():
        raise ConfigError(f"no database at {db_path}")
    with ledger_lock.shared(db_path):
        src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")
                dst.commit()
            finally:
                dst.close()
        finally:
            src.close()


def create_backup(
    db_path: Path,
    backup_dir: Path,
    *,
    store_id: str,
    device_id: str,
    now: datetime | None = None,
    keep_daily: int = 14,
) -> BackupInfo:
    """Back up the live database, check the copy, compress it, write its manifest, rotate.

    Raises:
        IntegrityError: the copy failed SQLite's integrity check (nothing is kept).
        DiskFull: no space for the copy (nothing is kept; the database is untouched).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with _disk_full_means_no_backup(db_path, backup_dir):
        backup_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    name = f"ledger-{store_id}-{device_id}-{stamp}{_SUFFIX}"
    # the temporary directory (every partial file in it) is gone before a full disk is told
    with (
        _disk_full_means_no_backup(db_path, backup_dir),
        tempfile.TemporaryDirectory(dir=backup_dir, prefix=".tmp-") as tmp,
    ):
        copy = Path(tmp) / "ledger.db"
        snapshot(db_path, copy)
        problem = integrity_problem(copy)
        if problem is not None:
            raise IntegrityError(f"backup copy of {db_path} failed its check: {problem}")
        conn = sqlite3.connect(copy)
        try:
            entries, members, revision = _stats(conn)
        finally:
            conn.close()
        packed = Path(tmp) / name
        with copy.open("rb") as raw, gzip.open(packed, "wb", compresslevel=6) as out:
            shutil.copyfileobj(raw, out, _CHUNK)
            out.flush()
        with packed.open("rb+") as handle:
            os.fsync(handle.fileno())
        info = BackupInfo(
            path=backup_dir / name,
            manifest=backup_dir / (name + ".json"),
            sha256=file_sha256(packed),
            size=packed.stat().st_size,
            created_at=now,
            store_id=store_id,
            device_id=device_id,
            ledger_entries=entries,
            members=members,
            schema_revision=revision,
        )
        manifest_tmp = Path(tmp) / "manifest.json"
        manifest_tmp.write_text(_manifest_json(info), encoding="utf-8")
        os.replace(packed, info.path)
        os.replace(manifest_tmp, info.manifest)
    fsync_directory(backup_dir)
    rotate(backup_dir, keep_daily)
    return info


@contextlib.contextmanager
def _disk_full_means_no_backup(db_path: Path, backup_dir: Path) -> Iterator[None]:
    """A full disk (where the backup goes, or where the database is: reading a WAL database
    may need its ``-shm`` file) is :class:`DiskFull` saying that no backup was made."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        for where in (backup_dir, db_path.parent):
            if out_of_space(exc, where):
                raise DiskFull("no backup was made", where=str(where)) from None
        raise


def _manifest_json(info: BackupInfo) -> str:
    body: dict[str, object] = {
        "format": FORMAT,
        "file": info.path.name,
        "sha256": info.sha256,
        "size": info.size,
        "created_at": info.created_at.isoformat(),
        "store_id": info.store_id,
        "device_id": info.device_id,
        "ledger_entries": info.ledger_entries,
        "members": info.members,
        "schema_revision": info.schema_revision,
    }
    if info.delivered_at is not None:
        body["delivered_at"] = info.delivered_at.isoformat()
    return json.dumps(body, indent=2, sort_keys=True)


def mark_delivered(info: BackupInfo, at: datetime) -> BackupInfo:
    """Records in the backup's manifest that HQ holds it (the manifest is replaced atomically).

    The mark lives in the manifest, not in the database: it goes away with the backup when
    rotation removes the pair, and a database restored from a backup carries no stale mark.
    """
    delivered = dataclasses.replace(info, delivered_at=at.astimezone(UTC))
    tmp = info.manifest.with_name(f".{info.manifest.name}.tmp")
    tmp.write_text(_manifest_json(delivered), encoding="utf-8")
    os.replace(tmp, info.manifest)
    return delivered


def read_manifest(manifest: Path) -> BackupInfo:
    """The manifest beside a backup file.

    Raises:
        IntegrityError: it is unreadable, of an unknown format, or names another file.
    """
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown backup format {raw.get('format')!r}")
        backup = manifest.with_name(raw["file"])
        if manifest.name != raw["file"] + ".json":
            raise ValueError(f"it describes {raw['file']}")
        delivered = raw.get("delivered_at")
        return BackupInfo(
            path=backup,
            manifest=manifest,
            sha256=str(raw["sha256"]),
            size=int(raw["size"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            store_id=str(raw["store_id"]),
            device_id=str(raw["device_id"]),
            ledger_entries=int(raw["ledger_entries"]),
            members=int(raw["members"]),
            schema_revision=raw.get("schema_revision"),
            delivered_at=datetime.fromisoformat(delivered) if delivered else None,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"backup manifest {manifest} is unusable: {exc}") from None


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Backups with a readable manifest, oldest first."""
    found = []
    for manifest in backup_dir.glob(f"*{_SUFFIX}.json") if backup_dir.is_dir() else []:
        with contextlib.suppress(IntegrityError):
            info = read_manifest(manifest)
            if info.path.exists():
                found.append(info)
    return sorted(found, key=lambda b: b.created_at)


def rotate(backup_dir: Path, keep_daily: int) -> list[Path]:
    """Keep every backup of the last 24 hours, and the newest of each of the last
    ``keep_daily`` days that have one; a manual backup is not lost to the nightly one.

    Returns:
        The backup files removed (with their manifests).
    """
    backups = list_backups(backup_dir)
    if not backups:
        return []
    newest_per_day: dict[str, BackupInfo] = {}
    for info in backups:  # oldest first: a later one of the same day replaces the earlier
        newest_per_day[info.created_at.date().isoformat()] = info
    keep = {newest_per_day[day].path for day in sorted(newest_per_day)[-max(keep_daily, 1) :]}
    recent = backups[-1].created_at - timedelta(hours=24)
    keep |= {info.path for info in backups if info.created_at > recent}
    removed = []
    for info in backups:
        if info.path not in keep:
            info.path.unlink(missing_ok=True)
            info.manifest.unlink(missing_ok=True)
            removed.append(info.path)
    return removed


@contextlib.contextmanager
def unpacked(backup: Path, into_dir: Path) -> Iterator[Path]:
    """The backup decompressed next to where it will go; removed unless the caller moved it.

    Raises:
        IntegrityError: the file is not a complete gzip stream.
    """
    fd, name = tempfile.mkstemp(dir=into_dir, prefix=".restore-", suffix=".db")
    target = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(backup, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, EOFError, zlib.error) as exc:
            raise IntegrityError(f"backup {backup} cannot be unpacked: {exc}") from None
        yield target
    finally:
        target.unlink(missing_ok=True)
