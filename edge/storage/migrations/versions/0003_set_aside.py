"""messages set aside by the sync agent

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_set_aside",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("topic", sa.String(length=256), nullable=False),
        sa.Column("hq_seq", sa.Integer(), nullable=True),
        sa.Column("waiting_for", sa.String(length=26), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("set_aside_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sync_set_aside")),
    )
    op.create_index(
        op.f("ix_sync_set_aside_waiting_for"), "sync_set_aside", ["waiting_for"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sync_set_aside_waiting_for"), table_name="sync_set_aside")
    op.drop_table("sync_set_aside")
