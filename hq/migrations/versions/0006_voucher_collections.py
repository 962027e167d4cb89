"""The first collection HQ heard of for each gift voucher, so that a second one, at another
store while offline or of a copied voucher, raises ``voucher_collected_twice``.

Revision ID: hq_0006
Revises: hq_0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0006"
down_revision = "hq_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_voucher_collection",
        sa.Column("issuer_device_id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "issuer_device_id", "voucher_id", name=op.f("pk_hq_voucher_collection")
        ),
    )


def downgrade() -> None:
    op.drop_table("hq_voucher_collection")
