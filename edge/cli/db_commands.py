"""``kiosk db``: schema migrations."""

from __future__ import annotations

import click

from edge.cli.common import emit, json_option, state
from edge.storage import migrate


@click.group("db")
def db_group() -> None:
    """The ledger database."""


@db_group.command("upgrade")
@json_option
def upgrade() -> None:
    """Bring the database schema up to date (safe to run any time)."""
    from edge.app import AppContext

    cli = state()
    app = AppContext.open(cli.data_dir, cli.config_path, upgrade_schema=False)
    try:
        before, after = migrate.upgrade(app.db.engine, vault=lambda: app.vault)
    finally:
        app.close()
    emit(
        {"before": before, "after": after, "changed": before != after},
        f"schema {before or '(empty)'} -> {after}"
        if before != after
        else f"schema {after} (up to date)",
    )


def register(group: click.Group) -> None:
    group.add_command(db_group)
