"""member-code nonces leave the ledger for their own database (nonces.db)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 06:00:00

The replay guard of member codes keeps its nonces in ``nonces.db`` beside the ledger
(``edge.storage.nonces``). The rows here are not carried over: each expires within minutes of
being written, so all the upgrade forgets is the codes used in the last 150 s before it (one
of them could be used once more right after the update, while still fresh).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("used_code_nonce", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_code_nonce_expires_at"))
    op.drop_table("used_code_nonce")


def downgrade() -> None:
    op.create_table(
        "used_code_nonce",
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_used_code_nonce")),
    )
    with op.batch_alter_table("used_code_nonce", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_code_nonce_expires_at"), ["expires_at"], unique=False
        )
