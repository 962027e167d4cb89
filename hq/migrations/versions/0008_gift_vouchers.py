"""Each gift voucher a kiosk printed, from its ``gift.redeemed`` event, so that a voucher
handed over at another store is checked with HQ while HQ is reachable.

Revision ID: hq_0008
Revises: hq_0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0008"
down_revision = "hq_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_gift_voucher",
        sa.Column("issuer_device_id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("card_no", sa.String(length=20), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_device_id", "voucher_id", name=op.f("pk_hq_gift_voucher")),
    )


def downgrade() -> None:
    op.drop_table("hq_gift_voucher")
