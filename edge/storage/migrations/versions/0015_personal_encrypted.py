"""a member's name and birthday encrypted at rest, like the phone number

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 13:00:00

``member.name`` and ``member.birthday`` become ``name_cipher`` and ``birthday_cipher``
(AES-256-GCM under the device's data key, as ``phone_cipher``). The rows there are encrypted
in place, in the migration's transaction: the data key reaches it from whoever runs it
(``AppContext.open`` and ``kiosk db upgrade`` pass the device's vault). A database holding
names or birthdays and upgraded without the key is refused rather than left in clear. The
plaintext columns are dropped with SQLite's own ``ALTER TABLE ... DROP COLUMN`` (3.35+):
rebuilding ``member`` would trip the foreign keys of its cards and lots.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import sqlalchemy as sa
from alembic import op

from edge.domain.errors import ConfigError
from edge.security.personal import TextVault

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

VAULT_ATTRIBUTE = "text_vault"  # edge.storage.migrate.VAULT_ATTRIBUTE

_member = sa.table(
    "member",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("birthday", sa.Date),
    sa.column("name_cipher", sa.LargeBinary),
    sa.column("birthday_cipher", sa.LargeBinary),
)


def _vault(why: str) -> TextVault:
    config = op.get_context().config
    opener: Callable[[], TextVault] | None = (
        config.attributes.get(VAULT_ATTRIBUTE) if config is not None else None
    )
    if opener is None:
        raise ConfigError(
            f"this database holds {why}: upgrade it on its device (`kiosk db upgrade`), "
            "which has the data key",
            code="key_missing",
        )
    return opener()


def key_refusal(conn: sa.Connection) -> ConfigError | None:
    """The refusal when rows kept in clear need the data key and none was given (asked
    before any migration runs: see edge.storage.schema_versions)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("member"):  # an empty database: nothing kept yet
        return None
    if "name" not in {c["name"] for c in inspector.get_columns("member")}:
        return None
    wanted = sa.or_(_member.c.name.is_not(None), _member.c.birthday.is_not(None))
    if conn.execute(sa.select(_member.c.id).where(wanted).limit(1)).first() is None:
        return None
    return ConfigError(
        "this database holds members' names and birthdays to encrypt: upgrade it on its "
        "device (`kiosk db upgrade`), which has the data key",
        code="key_missing",
    )


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_member.c.id, _member.c.name, _member.c.birthday).where(
            sa.or_(_member.c.name.is_not(None), _member.c.birthday.is_not(None))
        )
    ).all()
    # The key first, before any ALTER: a refusal leaves the schema as it was.
    vault = _vault("members' names and birthdays to encrypt") if rows else None
    op.add_column("member", sa.Column("name_cipher", sa.LargeBinary(), nullable=True))
    op.add_column("member", sa.Column("birthday_cipher", sa.LargeBinary(), nullable=True))
    if vault is not None:
        for member_id, name, birthday in rows:
            conn.execute(
                sa.update(_member)
                .where(_member.c.id == member_id)
                .values(
                    name_cipher=vault.encrypt_name(name),
                    birthday_cipher=vault.encrypt_birthday(birthday),
                )
            )
    op.drop_column("member", "name")
    op.drop_column("member", "birthday")


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_member.c.id, _member.c.name_cipher, _member.c.birthday_cipher).where(
            sa.or_(_member.c.name_cipher.is_not(None), _member.c.birthday_cipher.is_not(None))
        )
    ).all()
    vault = _vault("encrypted names and birthdays to decrypt") if rows else None
    op.add_column("member", sa.Column("name", sa.String(length=32), nullable=True))
    op.add_column("member", sa.Column("birthday", sa.Date(), nullable=True))
    if vault is not None:
        for member_id, name_cipher, birthday_cipher in rows:
            birthday: date | None = vault.decrypt_birthday(birthday_cipher)
            conn.execute(
                sa.update(_member)
                .where(_member.c.id == member_id)
                .values(name=vault.decrypt_name(name_cipher), birthday=birthday)
            )
    op.drop_column("member", "name_cipher")
    op.drop_column("member", "birthday_cipher")
