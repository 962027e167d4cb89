"""The member center at a glance: for the console, the technician and (later) telemetry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from edge import __version__
from edge.app import AppContext
from edge.domain.cards import CardState
from edge.services.connectivity import connectivity
from edge.services.pushes import RulesState, rules_state
from edge.services.staff_lists import staff_list_version
from edge.storage.models import AuditRecord, Card, Gift, LedgerEntry, Member, OutboxEvent


@dataclass(frozen=True)
class CenterStatus:
    version: str
    store_id: str
    device_id: str
    data_dir: str
    members: int
    active_cards: int
    points_outstanding: int
    gifts: int
    low_stock: list[str]
    outbox_pending: int
    offline: bool
    hq_last_contact: datetime | None
    sync_enabled: bool
    rules: RulesState
    staff_list_version: int = 0  # HQ's staff list for this store in force; 0: none yet


def center_status(app: AppContext) -> CenterStatus:
    with app.db.read() as s:
        now = app.clock()
        link = connectivity(s, app, now)
        return CenterStatus(
            version=__version__,
            store_id=app.store_id,
            device_id=app.device_id,
            data_dir=str(app.data_dir),
            members=s.scalar(
                select(func.count()).select_from(Member).where(Member.deleted_at.is_(None))
            )
            or 0,
            active_cards=s.scalar(
                select(func.count()).select_from(Card).where(Card.state == CardState.ACTIVE)
            )
            or 0,
            points_outstanding=int(
                s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0))) or 0
            ),
            gifts=s.scalar(select(func.count()).select_from(Gift).where(Gift.active.is_(True)))
            or 0,
            low_stock=list(
                s.scalars(
                    select(Gift.sku).where(Gift.active.is_(True), Gift.stock <= Gift.low_stock)
                )
            ),
            outbox_pending=s.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.delivered_at.is_(None))
            )
            or 0,
            offline=link.offline,
            hq_last_contact=link.since if app.config.sync.enabled else None,
            sync_enabled=app.config.sync.enabled,
            rules=rules_state(app),
            staff_list_version=staff_list_version(s, app.store_id),
        )


@dataclass(frozen=True)
class AuditLine:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, object]


def audit_log(app: AppContext, since: datetime | None = None, limit: int = 1000) -> list[AuditLine]:
    with app.db.read() as s:
        stmt = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(AuditRecord.at >= since)
        rows = list(s.scalars(stmt))
    return [
        AuditLine(r.seq, r.at, r.actor, r.action, r.subject, json.loads(r.detail))
        for r in reversed(rows)
    ]
