"""``kiosk backup``, ``kiosk update``, ``kiosk cleanup`` and ``kiosk provision``: keeping a
device in service for years.

These commands do not open the app context unless they need the database: a restore must
not hold the database it is about to replace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge.cli.common import emit, json_option, state
from edge.config import KioskConfig, default_data_dir, load_config

DEFAULT_INSTALL_ROOT = Path("/opt/member-kiosk")


def register(group: click.Group) -> None:
    group.add_command(backup_group)


def _data_dir() -> Path:
    return state().data_dir or default_data_dir()


def _config() -> KioskConfig:
    config, _ = load_config(state().config_path, _data_dir())
    return config


@click.group("backup")
def backup_group() -> None:
    """Ledger database backups: make one, list them, restore one."""


def _backup_row(info: Any) -> dict[str, Any]:
    return {
        "path": str(info.path),
        "sha256": info.sha256,
        "size": info.size,
        "created_at": info.created_at.isoformat(),
        "ledger_entries": info.ledger_entries,
        "members": info.members,
        "schema_revision": info.schema_revision,
    }


@backup_group.command("create")
@click.option(
    "--dir",
    "backup_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where backups go (default: backups/ in the data directory).",
)
@click.option("--keep-daily", default=14, show_default=True, help="Days of backups kept.")
@json_option
def backup_create_cmd(backup_dir: Path | None, keep_daily: int) -> None:
    """A consistent copy of the ledger while the kiosk runs, rotated, ready to send to HQ."""
    from edge.lifecycle.backup import BACKUP_DIR, create_backup, database_path

    data_dir = _data_dir()
    config = _config()
    info = create_backup(
        database_path(config, data_dir),
        backup_dir or data_dir / BACKUP_DIR,
        store_id=config.device.store_id,
        device_id=config.device.device_id,
        keep_daily=keep_daily,
    )
    emit(
        _backup_row(info),
        f"backup {info.path} ({info.size} bytes, {info.ledger_entries} ledger entries)\n"
        f"sha256 {info.sha256}",
    )


@backup_group.command("list")
@click.option("--dir", "backup_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
def backup_list_cmd(backup_dir: Path | None) -> None:
    """The backups kept on this device, oldest first."""
    from edge.lifecycle.backup import BACKUP_DIR, list_backups

    rows = [_backup_row(b) for b in list_backups(backup_dir or _data_dir() / BACKUP_DIR)]

    def human(_: Any) -> str:
        lines = [
            f"{r['created_at']:<33} {r['ledger_entries']:>9} entries  {r['path']}" for r in rows
        ]
        return "\n".join(lines) or "no backups"

    emit(rows, human)


@backup_group.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sha256", "expected", help="Expected SHA-256 when the manifest is not beside it.")
@click.option("--lock-timeout", default=60.0, show_default=True, help="Seconds to wait for work.")
@json_option
def backup_restore_cmd(backup: Path, expected: str | None, lock_timeout: float) -> None:
    """Verify BACKUP and make it the live ledger (stop member-kiosk and its agent first)."""
    from edge.lifecycle.restore import restore_backup

    result = restore_backup(
        backup, _data_dir(), _config(), expected_sha256=expected, lock_timeout=lock_timeout
    )
    lines = [
        f"restored {result.database} from {backup}",
        f"{result.ledger_entries} ledger entries, {result.members} members, "
        f"{result.audit_records} audit records: verified",
        *(f"kept the replaced file {p}" for p in result.replaced),
        *(f"warning: {w}" for w in result.warnings),
    ]
    emit(result, "\n".join(lines))
