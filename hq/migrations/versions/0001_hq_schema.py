"""HQ's schema as the reference service first kept it on SQLite and PostgreSQL.

Revision ID: hq_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_alert",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=96), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("cleared_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_alert")),
    )
    op.create_index("ix_hq_alert_open", "hq_alert", ["kind", "subject", "cleared_at"], unique=False)

    op.create_table(
        "hq_card",
        sa.Column("card_no", sa.String(length=20), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("card_no", name=op.f("pk_hq_card")),
    )
    op.create_index(op.f("ix_hq_card_member_id"), "hq_card", ["member_id"], unique=False)

    op.create_table(
        "hq_card_range",
        sa.Column("range_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("range_end", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("allocated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("range_start", name=op.f("pk_hq_card_range")),
        sa.UniqueConstraint("range_end", name=op.f("uq_hq_card_range_range_end")),
    )
    op.create_index(
        op.f("ix_hq_card_range_device_id"), "hq_card_range", ["device_id"], unique=False
    )

    op.create_table(
        "hq_card_use",
        sa.Column("card_no", sa.String(length=20), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("card_no", name=op.f("pk_hq_card_use")),
    )
    op.create_table(
        "hq_device",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_since", UTCDateTime(), nullable=True),
        sa.Column("last_seen", UTCDateTime(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("outbox_depth", sa.Integer(), nullable=True),
        sa.Column("last_sync_at", UTCDateTime(), nullable=True),
        sa.Column("telemetry", sa.Text(), nullable=False),
        sa.Column("faults", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_hq_device")),
    )
    op.create_table(
        "hq_device_seq",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("next_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_hq_device_seq")),
    )
    op.create_table(
        "hq_enrolled_device",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("card_range_start", sa.BigInteger(), nullable=False),
        sa.Column("card_range_end", sa.BigInteger(), nullable=False),
        sa.Column("certificate_serial", sa.String(length=48), nullable=False),
        sa.Column("certificate_expires", UTCDateTime(), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("successor", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_hq_enrolled_device")),
    )
    op.create_table(
        "hq_enrolment_action",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_enrolment_action")),
    )
    op.create_index(
        op.f("ix_hq_enrolment_action_device_id"), "hq_enrolment_action", ["device_id"], unique=False
    )

    op.create_table(
        "hq_entry",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.String(length=26), nullable=True),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_entry")),
    )
    op.create_index(op.f("ix_hq_entry_member_id"), "hq_entry", ["member_id"], unique=False)

    op.create_table(
        "hq_event",
        sa.Column(
            "hq_seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column(
            "device_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hq_seq", name=op.f("pk_hq_event")),
        sa.UniqueConstraint("event_id", name=op.f("uq_hq_event_event_id")),
    )
    op.create_index("ix_hq_event_device_seq", "hq_event", ["device_id", "device_seq"], unique=False)

    op.create_table(
        "hq_member",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("phone_masked", sa.String(length=16), nullable=False),
        sa.Column("balance", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("overdraft_flagged", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_member")),
    )
    op.create_table(
        "hq_pairing_used",
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code_sha256", name=op.f("pk_hq_pairing_used")),
    )
    op.create_table(
        "hq_quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_quarantine")),
    )
    op.create_index(op.f("ix_hq_quarantine_event_id"), "hq_quarantine", ["event_id"], unique=False)

    op.create_table(
        "hq_revoked_certificate",
        sa.Column("certificate_serial", sa.String(length=48), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("certificate_serial", name=op.f("pk_hq_revoked_certificate")),
    )
    op.create_index(
        op.f("ix_hq_revoked_certificate_device_id"),
        "hq_revoked_certificate",
        ["device_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_revoked_certificate_device_id"), table_name="hq_revoked_certificate")

    op.drop_table("hq_revoked_certificate")
    op.drop_index(op.f("ix_hq_quarantine_event_id"), table_name="hq_quarantine")

    op.drop_table("hq_quarantine")
    op.drop_table("hq_pairing_used")
    op.drop_table("hq_member")
    op.drop_index("ix_hq_event_device_seq", table_name="hq_event")

    op.drop_table("hq_event")
    op.drop_index(op.f("ix_hq_entry_member_id"), table_name="hq_entry")

    op.drop_table("hq_entry")
    op.drop_index(op.f("ix_hq_enrolment_action_device_id"), table_name="hq_enrolment_action")

    op.drop_table("hq_enrolment_action")
    op.drop_table("hq_enrolled_device")
    op.drop_table("hq_device_seq")
    op.drop_table("hq_device")
    op.drop_table("hq_card_use")
    op.drop_index(op.f("ix_hq_card_range_device_id"), table_name="hq_card_range")

    op.drop_table("hq_card_range")
    op.drop_index(op.f("ix_hq_card_member_id"), table_name="hq_card")

    op.drop_table("hq_card")
    op.drop_index("ix_hq_alert_open", table_name="hq_alert")

    op.drop_table("hq_alert")
