"""The chain's event counter, and one open alert per kind and subject.

Several HQ workers store events at once: each takes its chain numbers from ``hq_counter``
last in its transaction, and a partial unique index keeps two workers from opening the same
alert twice (duplicates an earlier single HQ left open are closed first).

Revision ID: hq_0002
Revises: hq_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hq_0002"
down_revision = "hq_0001"
branch_labels = None
depends_on = None

OPEN = sa.text("cleared_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "hq_counter",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hq_counter")),
    )
    op.execute(
        "INSERT INTO hq_counter (name, value) "
        "SELECT 'event', COALESCE(MAX(hq_seq), 0) FROM hq_event"
    )
    op.execute(
        "UPDATE hq_alert SET cleared_at = raised_at WHERE cleared_at IS NULL AND id NOT IN "
        "(SELECT MIN(id) FROM hq_alert WHERE cleared_at IS NULL GROUP BY kind, subject)"
    )
    op.drop_index("ix_hq_alert_open", table_name="hq_alert")
    op.create_index(
        "uq_hq_alert_open",
        "hq_alert",
        ["kind", "subject"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("uq_hq_alert_open", table_name="hq_alert")
    op.create_index("ix_hq_alert_open", "hq_alert", ["kind", "subject", "cleared_at"], unique=False)
    op.drop_table("hq_counter")
