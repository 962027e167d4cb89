"""Each kiosk's stock of each gift as HQ knows it from the kiosk's events.

Stock is each kiosk's own (HQ's catalogue carries prices, not stock), but every change to
it reaches HQ as an event: a restock or a lapsed voucher's return (``gift.stock``) and a
gift added at the kiosk (``gift.changed``) carry the new figure, a redemption
(``gift.redeemed``) the quantity taken, and a redemption that leaves the stock low
(``alert.low_stock``) the figure after it. :func:`record_stock` keeps, in the transaction
that stores the events, the figure of each kiosk's last such event less what was redeemed
since. A gift a kiosk has never sent a figure for (one that came with HQ's catalogue, at 0,
and was never restocked) has no row: HQ does not know it, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from edge.protocol import Event
from hq.models import GiftStock

FIGURES = frozenset({"gift.stock", "gift.changed", "alert.low_stock"})
TAKES = frozenset({"gift.redeemed"})
STOCK_KINDS = FIGURES | TAKES


def stock_move(kind: str, data: Any) -> tuple[str, int | None, int] | None:
    """``(sku, figure, taken)`` of one event's data: the stock it reports (None: it reports
    none) and the quantity it took; None when it says nothing about a gift's stock."""
    if kind not in STOCK_KINDS or not isinstance(data, dict):
        return None
    sku = data.get("sku")
    if not isinstance(sku, str) or not sku or len(sku) > 32:
        return None
    if kind in TAKES:
        qty = data.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            return None
        return sku, None, qty
    stock = data.get("stock")
    if isinstance(stock, bool) or not isinstance(stock, int):
        return None
    return sku, stock, 0


def record_stock(session: Session, events: Iterable[Event]) -> None:
    """Moves the stock rows of the gifts ``events`` (one device's in its order, or several
    devices' each in its order) report or take from; one read and a write per row moved."""
    moves: list[tuple[Event, str, int | None, int]] = []
    for event in events:
        if event.kind not in STOCK_KINDS:
            continue
        move = stock_move(event.kind, event.data)
        if move is not None:
            moves.append((event, *move))
    if not moves:
        return
    keys = sorted({(event.device_id, sku) for event, sku, _, _ in moves})
    rows = {
        (row.device_id, row.sku): row
        for row in session.scalars(
            select(GiftStock).where(tuple_(GiftStock.device_id, GiftStock.sku).in_(keys))
        )
    }
    for event, sku, figure, taken in moves:
        row = rows.get((event.device_id, sku))
        if row is None:
            if figure is None:
                continue  # taken from a figure HQ never heard: unknown until the next one
            row = GiftStock(device_id=event.device_id, sku=sku)
            session.add(row)
            rows[(event.device_id, sku)] = row
        row.store_id = event.store_id
        row.stock = figure if figure is not None else row.stock - taken
        row.at = event.at
        row.event_id = event.event_id


@dataclass(frozen=True)
class KioskStock:
    """One kiosk's stock of one gift, and when its figure last moved."""

    device_id: str
    stock: int
    at: datetime


@dataclass(frozen=True)
class StoreStock:
    """A gift's stock at one store: its kiosks' stock added up (each kiosk keeps its own)."""

    store_id: str
    sku: str
    stock: int
    at: datetime  # the latest move at any of its kiosks
    kiosks: tuple[KioskStock, ...]


def store_stock(
    session: Session, *, store_id: str | None = None, sku: str | None = None
) -> list[StoreStock]:
    """Every gift's stock at every store HQ heard of it from (or one store's, or one gift's),
    by store and SKU."""
    query = select(GiftStock).order_by(GiftStock.store_id, GiftStock.sku, GiftStock.device_id)
    if store_id is not None:
        query = query.where(GiftStock.store_id == store_id)
    if sku is not None:
        query = query.where(GiftStock.sku == sku)
    grouped: dict[tuple[str, str], list[GiftStock]] = {}
    for row in session.scalars(query):
        grouped.setdefault((row.store_id, row.sku), []).append(row)
    return [
        StoreStock(
            store,
            gift,
            sum(r.stock for r in rows),
            max(r.at for r in rows),
            tuple(KioskStock(r.device_id, r.stock, r.at) for r in rows),
        )
        for (store, gift), rows in grouped.items()
    ]
