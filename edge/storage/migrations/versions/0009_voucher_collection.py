"""gift vouchers handed over, how long each stays good, and when one lapsed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:00:00

``voucher_collection`` holds one row per gift voucher handed over at this desk, keyed by the
device that printed it and its id, so a reprint (the same code) is never collected twice.
``redemption.voucher_valid_until`` keeps the date printed on each new voucher; vouchers
printed before this revision have none and stay good for the 30 days printed on them.
``redemption.voucher_lapsed_at`` marks a voucher not collected by that date, once its gift
went back in stock (and its points, by HQ's rule).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("redemption", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voucher_valid_until", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("voucher_lapsed_at", UTCDateTime(), nullable=True))
    op.create_table(
        "voucher_collection",
        sa.Column("issuer_device_id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("redemption_id", sa.String(length=26), nullable=True),
        sa.Column("staff_id", sa.String(length=32), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("collected_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemption.id"],
            name=op.f("fk_voucher_collection_redemption_id_redemption"),
        ),
        sa.PrimaryKeyConstraint("issuer_device_id", "voucher_id", name=op.f("pk_voucher_collection")),
        sa.UniqueConstraint("redemption_id", name=op.f("uq_voucher_collection_redemption_id")),
    )


def downgrade() -> None:
    op.drop_table("voucher_collection")
    with op.batch_alter_table("redemption", schema=None) as batch_op:
        batch_op.drop_column("voucher_lapsed_at")
        batch_op.drop_column("voucher_valid_until")
