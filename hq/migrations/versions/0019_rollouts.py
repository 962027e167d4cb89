"""Staged rollouts of update bundles: the bundles uploaded to HQ, the rollouts, and each
kiosk's progress in them.

Revision ID: hq_0019
Revises: hq_0018
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0019"
down_revision = "hq_0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_bundle",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("file_name", sa.String(length=256), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_hq_bundle")),
    )
    op.create_index(op.f("ix_hq_bundle_version"), "hq_bundle", ["version"])
    op.create_table(
        "hq_rollout",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bundle_sha256", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("ring", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("max_failure_pct", sa.Integer(), nullable=False),
        sa.Column("min_attempts", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("offline_limit_s", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("counted_from", UTCDateTime(), nullable=False),
        sa.Column("stepped_at", UTCDateTime(), nullable=True),
        sa.Column("halted_reason", sa.Text(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_rollout")),
    )
    op.create_index(op.f("ix_hq_rollout_bundle_sha256"), "hq_rollout", ["bundle_sha256"])
    op.create_index(op.f("ix_hq_rollout_state"), "hq_rollout", ["state"])
    op.create_table(
        "hq_rollout_device",
        sa.Column("rollout_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("ring", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("from_version", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("result_status", sa.String(length=16), nullable=True),
        sa.Column("result_detail", sa.Text(), nullable=True),
        sa.Column("result_at", UTCDateTime(), nullable=True),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name=op.f("pk_hq_rollout_device")),
    )
    op.create_index(op.f("ix_hq_rollout_device_state"), "hq_rollout_device", ["state"])
    op.create_index(
        op.f("ix_hq_rollout_device_transaction_id"), "hq_rollout_device", ["transaction_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_rollout_device_transaction_id"), table_name="hq_rollout_device")
    op.drop_index(op.f("ix_hq_rollout_device_state"), table_name="hq_rollout_device")
    op.drop_table("hq_rollout_device")
    op.drop_index(op.f("ix_hq_rollout_state"), table_name="hq_rollout")
    op.drop_index(op.f("ix_hq_rollout_bundle_sha256"), table_name="hq_rollout")
    op.drop_table("hq_rollout")
    op.drop_index(op.f("ix_hq_bundle_version"), table_name="hq_bundle")
    op.drop_table("hq_bundle")
