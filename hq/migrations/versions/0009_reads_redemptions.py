"""Whether a kiosk's replica reads a member snapshot's gift and coupon redemptions (it says
so when it asks for its feed or fetches a member); a kiosk from before them is sent
snapshots without them.

Revision ID: hq_0009
Revises: hq_0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hq_0009"
down_revision = "hq_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hq_device", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reads_redemptions", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("hq_device", schema=None) as batch_op:
        batch_op.drop_column("reads_redemptions")
