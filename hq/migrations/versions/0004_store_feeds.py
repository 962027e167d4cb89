"""Replication scoped to the store: which stores hold each member, and one numbered feed per
store (the events of the members it holds, and a member's snapshot when the store comes to
hold them).

Every member is held by their home store and by every store where their points moved; each
store's feed starts with a snapshot of each member it holds, so a kiosk that follows its
store's feed from the start builds its members from HQ. Ledger entries keep their lot's
dates, so a snapshot rebuilds the lots; members keep their consent version.

Revision ID: hq_0004
Revises: hq_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0004"
down_revision = "hq_0003"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hq_member_store",
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "store_id", name=op.f("pk_hq_member_store")),
    )
    op.create_index("ix_hq_member_store_store_id", "hq_member_store", ["store_id"])
    op.create_table(
        "hq_feed_head",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("last_seq", BIG, nullable=False),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_hq_feed_head")),
    )
    op.create_table(
        "hq_feed",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("feed_seq", BIG, nullable=False),
        sa.Column("hq_seq", BIG, nullable=True),
        sa.Column("member_id", sa.String(length=26), nullable=True),
        sa.PrimaryKeyConstraint("store_id", "feed_seq", name=op.f("pk_hq_feed")),
    )
    with op.batch_alter_table("hq_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("available_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_version", sa.String(length=32), nullable=True))
    with op.batch_alter_table("hq_device", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("replica_feed", sa.String(length=8), nullable=False, server_default="chain")
        )
    # Imported opening lots: their dates are known.
    op.execute(
        "UPDATE hq_entry SET expires_at = (SELECT hq_lot.expires_at FROM hq_lot "
        "WHERE hq_lot.id = hq_entry.lot_id), available_at = at "
        "WHERE kind = 'opening' AND lot_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO hq_member_store (member_id, store_id, since) "
        "SELECT member_id, store_id, MIN(at) FROM ("
        " SELECT id AS member_id, store_id, created_at AS at FROM hq_member"
        " UNION ALL SELECT member_id, store_id, at FROM hq_entry"
        ") AS held GROUP BY member_id, store_id"
    )
    op.execute(
        "INSERT INTO hq_feed (store_id, feed_seq, hq_seq, member_id) "
        "SELECT store_id, ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY member_id), "
        "NULL, member_id FROM hq_member_store"
    )
    op.execute(
        "INSERT INTO hq_feed_head (store_id, last_seq) "
        "SELECT store_id, MAX(feed_seq) FROM hq_feed GROUP BY store_id"
    )


def downgrade() -> None:
    with op.batch_alter_table("hq_device", schema=None) as batch_op:
        batch_op.drop_column("replica_feed")
    with op.batch_alter_table("hq_member", schema=None) as batch_op:
        batch_op.drop_column("consent_version")
    with op.batch_alter_table("hq_entry", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("available_at")
    op.drop_table("hq_feed")
    op.drop_table("hq_feed_head")
    op.drop_index("ix_hq_member_store_store_id", table_name="hq_member_store")
    op.drop_table("hq_member_store")
