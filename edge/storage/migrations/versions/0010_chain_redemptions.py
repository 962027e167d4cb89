"""gift redemptions of the members held here made at other devices

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 06:10:00

``chain_redemption`` holds one row per redemption another device made for a member held
here, by redemption id, as the replica heard of it (the ``gift.redeemed`` event, or the
member's snapshot from HQ). A gift's per-member limit counts them with this device's own
redemptions, so a member who reached it at one store is refused at another.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_redemption",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("qty > 0", name=op.f("ck_chain_redemption_qty_positive")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_chain_redemption_member_id_member")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_redemption")),
    )
    with op.batch_alter_table("chain_redemption", schema=None) as batch_op:
        batch_op.create_index("ix_chain_redemption_member_sku", ["member_id", "sku"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chain_redemption", schema=None) as batch_op:
        batch_op.drop_index("ix_chain_redemption_member_sku")
    op.drop_table("chain_redemption")
