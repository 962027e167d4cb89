"""Staff accounts kept by HQ for each store, the version of each store's staff list, and
the record of every change to them.

Revision ID: hq_0007
Revises: hq_0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0007"
down_revision = "hq_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_staff",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("pin_hash", sa.String(length=160), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "staff_id", name=op.f("pk_hq_staff")),
    )
    op.create_table(
        "hq_staff_list",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_hq_staff_list")),
    )
    op.create_table(
        "hq_staff_change",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_staff_change")),
    )
    op.create_index(
        op.f("ix_hq_staff_change_store_id"), "hq_staff_change", ["store_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_staff_change_store_id"), table_name="hq_staff_change")
    op.drop_table("hq_staff_change")
    op.drop_table("hq_staff_list")
    op.drop_table("hq_staff")
