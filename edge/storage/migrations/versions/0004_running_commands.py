"""commands taken from HQ and not finished yet

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_command_running",
        sa.Column("transaction", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reply_topic", sa.String(length=256), nullable=False),
        sa.Column("correlation", sa.Text(), nullable=False),
        sa.Column("starts", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("transaction", name=op.f("pk_sync_command_running")),
    )


def downgrade() -> None:
    op.drop_table("sync_command_running")
