"""HQ's web console: staff accounts and their sessions, the audit log of every HQ action,
acknowledgement of alerts, and devices' telemetry over time.

Revision ID: hq_0017
Revises: hq_0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0017"
down_revision = "hq_0016"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hq_audit",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_audit")),
    )
    op.create_index(op.f("ix_hq_audit_at"), "hq_audit", ["at"])
    op.create_index(op.f("ix_hq_audit_actor"), "hq_audit", ["actor"])
    op.create_table(
        "hq_web_account",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hq_web_account")),
    )
    op.create_table(
        "hq_web_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_hq_web_session")),
    )
    op.create_index(op.f("ix_hq_web_session_account"), "hq_web_session", ["account"])
    # Plain ALTER TABLE on both engines: a batch copy of hq_alert would lose its partial index.
    op.add_column("hq_alert", sa.Column("acknowledged_at", UTCDateTime(), nullable=True))
    op.add_column("hq_alert", sa.Column("acknowledged_by", sa.String(length=64), nullable=True))
    op.add_column("hq_alert", sa.Column("ack_note", sa.Text(), nullable=True))
    op.add_column(
        "hq_device",
        sa.Column("health", sa.String(length=16), server_default="unknown", nullable=False),
    )
    op.add_column("hq_device", sa.Column("last_backup_at", UTCDateTime(), nullable=True))
    op.create_table(
        "hq_telemetry",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("sample", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_telemetry")),
    )
    op.create_index("ix_hq_telemetry_device_at", "hq_telemetry", ["device_id", "at"])
    op.create_table(
        "hq_adjustment",
        sa.Column("adjustment_id", sa.String(length=26), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("adjustment_id", name=op.f("pk_hq_adjustment")),
    )
    op.create_index(op.f("ix_hq_adjustment_member_id"), "hq_adjustment", ["member_id"])
    op.create_index(op.f("ix_hq_adjustment_state"), "hq_adjustment", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_adjustment_state"), table_name="hq_adjustment")
    op.drop_index(op.f("ix_hq_adjustment_member_id"), table_name="hq_adjustment")
    op.drop_table("hq_adjustment")
    op.drop_index("ix_hq_telemetry_device_at", table_name="hq_telemetry")
    op.drop_table("hq_telemetry")
    for column in ("ack_note", "acknowledged_by", "acknowledged_at"):
        op.drop_column("hq_alert", column)
    for column in ("last_backup_at", "health"):
        op.drop_column("hq_device", column)
    op.drop_index(op.f("ix_hq_web_session_account"), table_name="hq_web_session")
    op.drop_table("hq_web_session")
    op.drop_table("hq_web_account")
    op.drop_index(op.f("ix_hq_audit_actor"), table_name="hq_audit")
    op.drop_index(op.f("ix_hq_audit_at"), table_name="hq_audit")
    op.drop_table("hq_audit")
