"""when this store last fetched a member of another store from HQ

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 23:00:00

A member of another store is held here while seen here: their points moved here (the
ledger says when) or this store fetched them from HQ (``member.held_at``). Members fetched
before this revision have none, and are fetched again when next met.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_column("held_at")
