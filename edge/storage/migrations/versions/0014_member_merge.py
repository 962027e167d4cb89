"""members merged at HQ

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 13:00:00

``member.merged_into`` names the member a record was merged into at HQ (合并会员): its cards
and lots are the kept member's from then on. ``ledger_entry.note`` keeps the note of an
entry HQ booked with one (a merge's), for the member's history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into", sa.String(length=26), nullable=True))
        batch_op.create_index(batch_op.f("ix_member_merged_into"), ["merged_into"], unique=False)
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_column("note")
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_merged_into"))
        batch_op.drop_column("merged_into")
