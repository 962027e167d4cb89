"""a member's name and birthday sealed with HQ's data key, like the phone number

Revision ID: hq_0014
Revises: hq_0013
Create Date: 2026-12-07 13:00:00

``hq_member.name`` and ``birthday`` become ``name_enc`` and ``birthday_enc`` (AES-256-GCM
under HQ's data key, as ``phone_enc``), and ``birth_month`` keeps the birthday's month in
clear for the campaigns' "birthday this month" audience. The rows there are sealed in place,
in the migration's transaction, with the key ``kiosk hq db upgrade`` passes (the one the
service is configured with); a database holding names or birthdays upgraded without it is
refused rather than left in clear.

The registrations' events HQ stored (``hq_event``) lose their name and birthday: HQ keeps
them in the member row only, and puts them back as it relays a registration to a store.
A downgrade does not put them back into the stored events.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from edge.domain.errors import ConfigError
from edge.security.personal import TextVault

revision = "hq_0014"
down_revision = "hq_0013"
branch_labels = None
depends_on = None

VAULT_ATTRIBUTE = "text_vault"  # hq.schema.VAULT_ATTRIBUTE
_CHUNK = 1000

_member = sa.table(
    "hq_member",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("birthday", sa.Date),
    sa.column("name_enc", sa.LargeBinary),
    sa.column("birthday_enc", sa.LargeBinary),
    sa.column("birth_month", sa.SmallInteger),
)


def _vault(why: str) -> TextVault:
    config = op.get_context().config
    opener: Callable[[], TextVault] | None = (
        config.attributes.get(VAULT_ATTRIBUTE) if config is not None else None
    )
    if opener is None:
        raise ConfigError(
            f"HQ's database holds {why}: run `kiosk hq db upgrade` with HQ's data key "
            "(data_key_file)",
            code="key_missing",
        )
    return opener()


def key_refusal(conn: sa.Connection) -> ConfigError | None:
    """The refusal when rows kept in clear need HQ's data key and none was given (asked
    before any migration runs: see edge.storage.schema_versions)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("hq_member"):  # an empty database: nothing kept yet
        return None
    if "name" not in {c["name"] for c in inspector.get_columns("hq_member")}:
        return None
    wanted = sa.or_(_member.c.name.is_not(None), _member.c.birthday.is_not(None))
    if conn.execute(sa.select(_member.c.id).where(wanted).limit(1)).first() is None:
        return None
    return ConfigError(
        "HQ's database holds members' names and birthdays to seal: run `kiosk hq db "
        "upgrade` with HQ's data key (data_key_file)",
        code="key_missing",
    )


def upgrade() -> None:
    conn = op.get_bind()
    wanted = sa.or_(_member.c.name.is_not(None), _member.c.birthday.is_not(None))
    # The key first, before any ALTER: a refusal must leave the schema as it was (SQLite
    # commits DDL as it goes).
    any_kept = conn.execute(sa.select(_member.c.id).where(wanted).limit(1)).first()
    vault = _vault("members' names and birthdays to seal") if any_kept else None
    op.add_column("hq_member", sa.Column("name_enc", sa.LargeBinary(), nullable=True))
    op.add_column("hq_member", sa.Column("birthday_enc", sa.LargeBinary(), nullable=True))
    op.add_column("hq_member", sa.Column("birth_month", sa.SmallInteger(), nullable=True))
    after = ""
    while True:  # in chunks by id: a chain holds millions of members
        rows = conn.execute(
            sa.select(_member.c.id, _member.c.name, _member.c.birthday)
            .where(wanted, _member.c.id > after)
            .order_by(_member.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows or vault is None:
            break
        for member_id, name, birthday in rows:
            conn.execute(
                sa.update(_member)
                .where(_member.c.id == member_id)
                .values(
                    name_enc=vault.encrypt_name(name),
                    birthday_enc=vault.encrypt_birthday(birthday),
                    birth_month=birthday.month if birthday is not None else None,
                )
            )
        after = rows[-1][0]
    op.drop_column("hq_member", "name")
    op.drop_column("hq_member", "birthday")
    _forget_in_stored_registrations(conn)


_event = sa.table(
    "hq_event",
    sa.column("hq_seq", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("payload", sa.Text),
)


def _forget_in_stored_registrations(conn: sa.Connection) -> None:
    after = 0
    while True:
        rows = conn.execute(
            sa.select(_event.c.hq_seq, _event.c.payload)
            .where(_event.c.kind == "member.registered", _event.c.hq_seq > after)
            .order_by(_event.c.hq_seq)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        for hq_seq, payload in rows:
            body = json.loads(payload)
            data = body.get("data")
            if isinstance(data, dict) and ({"name", "birthday"} & data.keys()):
                for key in ("name", "birthday"):
                    data.pop(key, None)
                conn.execute(
                    sa.update(_event)
                    .where(_event.c.hq_seq == hq_seq)
                    .values(payload=json.dumps(body, ensure_ascii=False, separators=(",", ":")))
                )
        after = rows[-1][0]


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_member.c.id, _member.c.name_enc, _member.c.birthday_enc).where(
            sa.or_(_member.c.name_enc.is_not(None), _member.c.birthday_enc.is_not(None))
        )
    ).all()
    vault = _vault("sealed names and birthdays to open") if rows else None
    op.add_column("hq_member", sa.Column("name", sa.String(length=64), nullable=True))
    op.add_column("hq_member", sa.Column("birthday", sa.Date(), nullable=True))
    if vault is not None:
        for member_id, name_enc, birthday_enc in rows:
            conn.execute(
                sa.update(_member)
                .where(_member.c.id == member_id)
                .values(
                    name=vault.decrypt_name(name_enc),
                    birthday=vault.decrypt_birthday(birthday_enc),
                )
            )
    op.drop_column("hq_member", "birth_month")
    op.drop_column("hq_member", "birthday_enc")
    op.drop_column("hq_member", "name_enc")
