"""corrections at the member desk: refunds of receipts and staff adjustments of points

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:30:00

Both are new tables; the ledger entries they make are ordinary entries (kinds ``refund``
and ``adjustment``), so nothing that exists changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refund",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_refund_amount_positive")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_refund_points_not_negative")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_refund_member_id_member")
        ),
        sa.ForeignKeyConstraint(
            ["receipt_id"],
            ["purchase.receipt_id"],
            name=op.f("fk_refund_receipt_id_purchase"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
    )
    op.create_index("ix_refund_receipt", "refund", ["receipt_id"], unique=False)
    op.create_table(
        "adjustment",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("staff_id", sa.String(length=32), nullable=False),
        sa.Column("approved_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("points != 0", name=op.f("ck_adjustment_points_nonzero")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_adjustment_member_id_member")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustment")),
    )
    op.create_index("ix_adjustment_member", "adjustment", ["member_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_adjustment_member", table_name="adjustment")
    op.drop_table("adjustment")
    op.drop_index("ix_refund_receipt", table_name="refund")
    op.drop_table("refund")
