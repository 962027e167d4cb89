"""Members brought in from the chain's earlier system: their phone (sealed and hashed), name
and birthday at HQ, opening lots with their expiry, and each import's progress and refusals.

Revision ID: hq_0003
Revises: hq_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0003"
down_revision = "hq_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_import",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=256), nullable=False),
        sa.Column("lines_done", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "expired_points", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_import")),
        sa.UniqueConstraint("file_sha256", name=op.f("uq_hq_import_file_sha256")),
    )
    op.create_table(
        "hq_import_refusal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("import_id", sa.String(length=26), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("card_no", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_import_refusal")),
    )
    with op.batch_alter_table("hq_import_refusal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hq_import_refusal_import_id"), ["import_id"], unique=False
        )

    op.create_table(
        "hq_lot",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("points", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_lot")),
    )
    with op.batch_alter_table("hq_lot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hq_lot_member_id"), ["member_id"], unique=False)

    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("phone_enc", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("name", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("birthday", sa.Date(), nullable=True))
        batch_op.create_index(batch_op.f("ix_hq_member_phone_hash"), ["phone_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hq_member_phone_hash"))
        batch_op.drop_column("birthday")
        batch_op.drop_column("name")
        batch_op.drop_column("phone_enc")
        batch_op.drop_column("phone_hash")

    with op.batch_alter_table("hq_lot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hq_lot_member_id"))

    op.drop_table("hq_lot")
    with op.batch_alter_table("hq_import_refusal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hq_import_refusal_import_id"))

    op.drop_table("hq_import_refusal")
    op.drop_table("hq_import")
