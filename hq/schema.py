"""HQ's schema, versioned by its own Alembic migrations: ``kiosk hq db upgrade``.

The running service never creates or alters a table: it checks that the database is at the
revision this build expects and refuses to start otherwise, saying what to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from edge.domain.errors import ConfigError
from edge.security.personal import TextVault
from edge.storage.schema_versions import Migrations

HQ_SCHEMA = Migrations(Path(__file__).parent / "migrations")


VAULT_ATTRIBUTE = "text_vault"
"""The migrations' attribute holding a callable that returns HQ's data key's vault (called
only when a migration has rows to seal: hq_0014, the names and birthdays)."""


def upgrade(
    engine: Engine, revision: str = "head", *, vault: Callable[[], TextVault] | None = None
) -> tuple[str | None, str]:
    """Brings HQ's database to ``revision``; returns (before, after).

    ``vault`` opens HQ's data key for a migration that seals personal data in place; without
    it such a migration refuses a database that holds any.
    """
    return HQ_SCHEMA.upgrade(engine, revision, {VAULT_ATTRIBUTE: vault} if vault else None)


def require_current(engine: Engine) -> None:
    """Refuses, in one line, a database whose schema is not the one this build expects."""
    current = HQ_SCHEMA.current_revision(engine)
    head = HQ_SCHEMA.head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise ConfigError(
            f"HQ's database at {where} has no schema yet: run `kiosk hq db upgrade` first",
            code="schema_not_current",
        )
    raise ConfigError(
        f"HQ's database at {where} is at schema revision {current}, this HQ needs {head}: "
        "run `kiosk hq db upgrade` (after a backup)",
        code="schema_not_current",
    )
