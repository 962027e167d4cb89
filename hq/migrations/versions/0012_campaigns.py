"""HQ's coupon campaigns and the coupons they issued into members' wallets.

Revision ID: hq_0012
Revises: hq_0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0012"
down_revision = "hq_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_campaign",
        sa.Column("campaign_id", sa.String(length=24), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value_cents", sa.Integer(), nullable=False),
        sa.Column("threshold_cents", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("gift_sku", sa.String(length=32), nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("audience_tier", sa.String(length=16), nullable=True),
        sa.Column("pool_total", sa.Integer(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("finished_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_hq_campaign")),
    )
    op.create_table(
        "hq_coupon",
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=24), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_store_id", sa.String(length=64), nullable=True),
        sa.Column("used_device_id", sa.String(length=64), nullable=True),
        sa.Column("used_ref", sa.String(length=64), nullable=True),
        sa.Column("used_offline", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("coupon_id", name=op.f("pk_hq_coupon")),
    )
    # a campaign's coupons of some members (issuing, chunk by chunk), whatever the planner's
    # statistics say: campaign first, then member
    op.create_index("ix_hq_coupon_campaign", "hq_coupon", ["campaign_id", "member_id"])
    op.create_index("ix_hq_coupon_member", "hq_coupon", ["member_id", "campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_hq_coupon_member", table_name="hq_coupon")
    op.drop_index("ix_hq_coupon_campaign", table_name="hq_coupon")
    op.drop_table("hq_coupon")
    op.drop_table("hq_campaign")
