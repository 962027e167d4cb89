"""Each gift voucher a kiosk printed, from its ``gift.redeemed`` event, so that a voucher
handed over at another store is checked with HQ while HQ is reachable. The vouchers of the
events stored before are filled in from them (without the gift's name or printed date, which
those events did not carry).

Revision ID: hq_0008
Revises: hq_0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0008"
down_revision = "hq_0007"
branch_labels = None
depends_on = None

CHUNK = 1000


def upgrade() -> None:
    op.create_table(
        "hq_gift_voucher",
        sa.Column("issuer_device_id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=26), nullable=False),
        sa.Column("card_no", sa.String(length=20), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_device_id", "voucher_id", name=op.f("pk_hq_gift_voucher")),
    )
    _fill_in()


def _voucher(
    device_id: str, store_id: str, event_id: str, at: Any, payload: str
) -> dict[str, Any] | None:
    """The voucher row of one stored ``gift.redeemed`` event (None: a coupon redemption, or
    data without a voucher)."""
    try:
        data = json.loads(payload).get("data") or {}
        voucher_id, sku, qty = data.get("redemption_id"), data.get("sku"), data.get("qty")
        if data.get("coupons") or not isinstance(voucher_id, str) or not voucher_id:
            return None
        if not isinstance(sku, str) or not sku or not isinstance(qty, int) or qty < 1:
            return None
        until = data.get("valid_until")
        return {
            "issuer_device_id": device_id,
            "voucher_id": voucher_id[:64],
            "store_id": store_id,
            "member_id": str(data.get("member_id") or "")[:26],
            "card_no": str(data.get("card_no") or "")[:20],
            "sku": sku[:32],
            "name": str(data.get("name") or "")[:256],
            "qty": qty,
            "valid_until": date.fromisoformat(until) if isinstance(until, str) else None,
            "event_id": event_id,
            "at": at,
        }
    except (ValueError, AttributeError):
        return None


def _fill_in() -> None:
    events = sa.table(
        "hq_event",
        sa.column("hq_seq", sa.BigInteger()),
        sa.column("event_id", sa.String()),
        sa.column("device_id", sa.String()),
        sa.column("store_id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("at", UTCDateTime()),
        sa.column("payload", sa.Text()),
    )
    names = (
        "issuer_device_id",
        "voucher_id",
        "store_id",
        "member_id",
        "card_no",
        "sku",
        "name",
        "qty",
        "valid_until",
        "event_id",
    )
    vouchers = sa.table(
        "hq_gift_voucher", *(sa.column(name) for name in names), sa.column("at", UTCDateTime())
    )
    conn = op.get_bind()
    seen: set[tuple[str, str]] = set()
    after = -1
    while True:
        rows = conn.execute(
            sa.select(
                events.c.hq_seq,
                events.c.device_id,
                events.c.store_id,
                events.c.event_id,
                events.c.at,
                events.c.payload,
            )
            .where(events.c.kind == "gift.redeemed", events.c.hq_seq > after)
            .order_by(events.c.hq_seq)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        after = rows[-1][0]
        found: list[dict[str, Any]] = []
        for _, device_id, store_id, event_id, at, payload in rows:
            row = _voucher(device_id, store_id, event_id, at, payload)
            if row is not None and (device_id, row["voucher_id"]) not in seen:
                seen.add((device_id, row["voucher_id"]))
                found.append(row)
        if found:
            conn.execute(sa.insert(vouchers), found)


def downgrade() -> None:
    op.drop_table("hq_gift_voucher")
