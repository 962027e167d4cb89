"""The member page's sign-in: one-time codes sent to a member's phone, the members' own
sessions (apart from the staff's), and what the rate limits and the lockout count.

``hq_member_otp`` keeps each sign-in code only as a hash, with the phone's lookup hash, when it
expires and when it was used. ``hq_member_signin`` is one row per phone number (its lookup
hash): wrong codes in a row and the lockout they caused. ``hq_member_signin_request`` is one
row per code asked for, by number and by client address, which the rate limits count (the
web workers share them through the database). ``hq_member_session`` keeps only the hash of a
member session's token.

Revision ID: hq_0022
Revises: hq_0021
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0022"
down_revision = "hq_0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hq_member_otp",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_member_otp")),
    )
    op.create_index(op.f("ix_hq_member_otp_phone_hash"), "hq_member_otp", ["phone_hash"])
    op.create_table(
        "hq_member_signin",
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("phone_hash", name=op.f("pk_hq_member_signin")),
    )
    op.create_table(
        "hq_member_signin_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hq_member_signin_request")),
    )
    op.create_index(
        "ix_hq_member_signin_request_phone", "hq_member_signin_request", ["phone_hash", "at"]
    )
    op.create_index(
        "ix_hq_member_signin_request_address", "hq_member_signin_request", ["address", "at"]
    )
    op.create_table(
        "hq_member_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_hq_member_session")),
    )
    op.create_index(op.f("ix_hq_member_session_member_id"), "hq_member_session", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_member_session_member_id"), table_name="hq_member_session")
    op.drop_table("hq_member_session")
    op.drop_index("ix_hq_member_signin_request_address", table_name="hq_member_signin_request")
    op.drop_index("ix_hq_member_signin_request_phone", table_name="hq_member_signin_request")
    op.drop_table("hq_member_signin_request")
    op.drop_table("hq_member_signin")
    op.drop_index(op.f("ix_hq_member_otp_phone_hash"), table_name="hq_member_otp")
    op.drop_table("hq_member_otp")
