"""The gift catalogue and the rules as HQ publishes them, every version kept (who, when,
why, and whether the broker has it yet); gift pictures kept once by SHA-256; and each
kiosk's stock of each gift as its events told HQ, filled in from the events stored before.

Revision ID: hq_0020
Revises: hq_0019
Create Date: 2026-12-08
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from edge.storage.types import UTCDateTime

revision = "hq_0020"
down_revision = "hq_0019"
branch_labels = None
depends_on = None

CHUNK = 1000
# The events that carry a kiosk's stock of a gift (a figure) or take from it (a quantity).
FIGURES = ("gift.stock", "gift.changed", "alert.low_stock")
TAKES = ("gift.redeemed",)


def upgrade() -> None:
    op.create_table(
        "hq_document_version",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kind", "version", name=op.f("pk_hq_document_version")),
    )
    op.create_table(
        "hq_picture",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_hq_picture")),
    )
    op.create_table(
        "hq_gift_stock",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "sku", name=op.f("pk_hq_gift_stock")),
    )
    op.create_index(op.f("ix_hq_gift_stock_store_id"), "hq_gift_stock", ["store_id"])
    _fill_in_stock()


def _stock_move(kind: str, payload: str) -> tuple[str, int | None, int] | None:
    """(sku, figure or None, quantity taken) of one stored event; None when it says nothing
    about stock."""
    try:
        data = json.loads(payload).get("data") or {}
    except (ValueError, AttributeError):
        return None
    sku = data.get("sku") if isinstance(data, dict) else None
    if not isinstance(sku, str) or not sku or len(sku) > 32:
        return None
    if kind in TAKES:
        qty = data.get("qty")
        return (sku, None, qty) if isinstance(qty, int) and qty > 0 else None
    stock = data.get("stock")
    if isinstance(stock, bool) or not isinstance(stock, int):
        return None
    return sku, stock, 0


def _fill_in_stock() -> None:
    """Each kiosk's stock of each gift from its events stored so far (a device's events are
    stored in its order, so HQ's order is each device's own)."""
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
    stock = sa.table(
        "hq_gift_stock",
        *(sa.column(name) for name in ("device_id", "sku", "store_id", "stock", "event_id")),
        sa.column("at", UTCDateTime()),
    )
    conn = op.get_bind()
    known: dict[tuple[str, str], dict[str, Any]] = {}
    after = -1
    while True:
        rows = conn.execute(
            sa.select(
                events.c.hq_seq,
                events.c.event_id,
                events.c.device_id,
                events.c.store_id,
                events.c.kind,
                events.c.at,
                events.c.payload,
            )
            .where(events.c.kind.in_(FIGURES + TAKES), events.c.hq_seq > after)
            .order_by(events.c.hq_seq)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        for _, event_id, device_id, store_id, kind, at, payload in rows:
            move = _stock_move(kind, payload)
            if move is None:
                continue
            sku, figure, taken = move
            row = known.get((device_id, sku))
            if figure is None and row is None:
                continue  # taken from a figure HQ never heard: unknown until the next one
            at_: datetime = at
            if row is None:
                row = known[(device_id, sku)] = {"device_id": device_id, "sku": sku}
            row.update(
                store_id=store_id,
                stock=figure if figure is not None else row["stock"] - taken,
                at=at_,
                event_id=event_id,
            )
    values = list(known.values())
    for start in range(0, len(values), CHUNK):
        conn.execute(sa.insert(stock), values[start : start + CHUNK])


def downgrade() -> None:
    op.drop_index(op.f("ix_hq_gift_stock_store_id"), table_name="hq_gift_stock")
    op.drop_table("hq_gift_stock")
    op.drop_table("hq_picture")
    op.drop_table("hq_document_version")
