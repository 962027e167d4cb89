"""a gift's picture, by the SHA-256 of the original

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:00:00

The scaled copy the touchscreen shows is kept in ``pictures/`` beside the ledger, named by
that hash (:mod:`edge.services.pictures`). Gifts from before this revision have none and show
their first character, as they did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gift", schema=None) as batch_op:
        batch_op.add_column(sa.Column("picture", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gift", schema=None) as batch_op:
        batch_op.drop_column("picture")
