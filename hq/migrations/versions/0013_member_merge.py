"""Members merged at HQ: which record went into which (``hq_member.merged_into``) and the
record of each merge (``hq_member_merge``: who, when, why, what moved, before and after).

Revision ID: hq_0013
Revises: hq_0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0013"
down_revision = "hq_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into", sa.String(length=26), nullable=True))
        batch_op.create_index(batch_op.f("ix_hq_member_merged_into"), ["merged_into"], unique=False)
    op.create_table(
        "hq_member_merge",
        sa.Column("merge_id", sa.String(length=26), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kept_member_id", sa.String(length=26), nullable=False),
        sa.Column("absorbed_member_id", sa.String(length=26), nullable=False),
        sa.Column("points", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("old_cards", sa.String(length=8), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("merge_id", name=op.f("pk_hq_member_merge")),
    )
    op.create_index(
        op.f("ix_hq_member_merge_kept_member_id"), "hq_member_merge", ["kept_member_id"]
    )
    op.create_index(
        op.f("ix_hq_member_merge_absorbed_member_id"),
        "hq_member_merge",
        ["absorbed_member_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_member_merge_absorbed_member_id"), table_name="hq_member_merge")
    op.drop_index(op.f("ix_hq_member_merge_kept_member_id"), table_name="hq_member_merge")
    op.drop_table("hq_member_merge")
    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hq_member_merged_into"))
        batch_op.drop_column("merged_into")
