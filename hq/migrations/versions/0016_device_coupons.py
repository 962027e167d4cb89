"""Devices' voucher-signing keys, and the coupons kiosks printed for points, so that HQ
answers about them at any store of the chain.

Revision ID: hq_0016
Revises: hq_0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0016"
down_revision = "hq_0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_device_key",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "public_key", name=op.f("pk_hq_device_key")),
    )
    op.create_table(
        "hq_device_coupon",
        sa.Column("issuer_device_id", sa.String(length=64), nullable=False),
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("value_cents", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_store_id", sa.String(length=64), nullable=True),
        sa.Column("used_device_id", sa.String(length=64), nullable=True),
        sa.Column("used_ref", sa.String(length=64), nullable=True),
        sa.Column("used_offline", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_device_id", "coupon_id", name=op.f("pk_hq_device_coupon")),
    )


def downgrade() -> None:
    op.drop_table("hq_device_coupon")
    op.drop_table("hq_device_key")
