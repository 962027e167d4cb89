"""coupons of HQ's campaigns used at this device

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-07 08:00:00

``hq_coupon_use`` holds each coupon of an HQ campaign this device took at a till: the ones
HQ granted, and the ones accepted offline within the device's cap, which HQ records (and
flags when used twice) when their ``coupon.used`` event reaches it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_coupon_use",
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value_cents", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("coupon_id", name=op.f("pk_hq_coupon_use")),
    )
    with op.batch_alter_table("hq_coupon_use", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hq_coupon_use_used_at"), ["used_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hq_coupon_use", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hq_coupon_use_used_at"))
    op.drop_table("hq_coupon_use")
