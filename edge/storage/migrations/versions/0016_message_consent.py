"""a member's consent to messages, apart from the membership terms

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 19:30:00

``member.message_consent_version`` is the version of the message terms (SMS reminders) the
member agreed to, None when they did not or withdrew; ``message_consent_at`` is when it last
changed. The phone number sealed for HQ is not kept here: it travels only in the outbox event.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("message_consent_version", sa.String(length=32), nullable=True)
        )
        batch_op.add_column(sa.Column("message_consent_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_column("message_consent_at")
        batch_op.drop_column("message_consent_version")
