"""A store holds a member of another store while they are seen there: when each store last saw
each member it holds (their points moved there, or it fetched them), so HQ stops sending a
store the changes of a member not seen there for months.

Revision ID: hq_0005
Revises: hq_0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0005"
down_revision = "hq_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hq_member_store", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", UTCDateTime(), nullable=True))
    # Until now a holding was never renewed: when it began is the last sight HQ knows of.
    op.execute("UPDATE hq_member_store SET seen_at = since")
    with op.batch_alter_table("hq_member_store", schema=None) as batch_op:
        batch_op.alter_column("seen_at", existing_type=UTCDateTime(), nullable=False)
    op.create_index("ix_hq_member_store_seen_at", "hq_member_store", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_hq_member_store_seen_at", table_name="hq_member_store")
    with op.batch_alter_table("hq_member_store", schema=None) as batch_op:
        batch_op.drop_column("seen_at")
