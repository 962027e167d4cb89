"""Messages to members: consent to them, kept apart from the membership terms, and every
message HQ sends (one-time sign-in codes, reminders), with its result.

``hq_member.message_consent_version`` is the version of the message terms the member agreed
to (NULL: no consent, or withdrawn), ``message_consent_at`` when they agreed or withdrew.
``hq_message`` keeps each message: to whom (masked; the number itself sealed with HQ's data
key only until it is sent), what, when it is due, how many tries and how it ended.
``dedupe_key`` makes a reminder once per what it reminds of (an expiry date, a year).

Revision ID: hq_0021
Revises: hq_0020
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0021"
down_revision = "hq_0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hq_member") as batch_op:
        batch_op.add_column(sa.Column("message_consent_version", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("message_consent_at", UTCDateTime(), nullable=True))
    op.create_table(
        "hq_message",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("phone_masked", sa.String(length=16), nullable=False),
        sa.Column("phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=96), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("sender", sa.String(length=32), nullable=False),
        sa.Column("provider_ref", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_message")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_hq_message_dedupe_key")),
    )
    op.create_index(op.f("ix_hq_message_member_id"), "hq_message", ["member_id"])
    op.create_index("ix_hq_message_status_due", "hq_message", ["status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_hq_message_status_due", table_name="hq_message")
    op.drop_index(op.f("ix_hq_message_member_id"), table_name="hq_message")
    op.drop_table("hq_message")
    with op.batch_alter_table("hq_member") as batch_op:
        batch_op.drop_column("message_consent_at")
        batch_op.drop_column("message_consent_version")
