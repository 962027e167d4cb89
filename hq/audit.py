"""HQ's audit log: every action taken at HQ, from the web console or a ``kiosk hq`` command.

:func:`record` adds the row in the caller's session, so it commits (or rolls back) with the
change it describes. ``before`` and ``after`` are JSON-able snapshots of what changed; a
secret (a password hash, a PIN hash, a key) is never passed in.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hq.models import AuditRecord


@dataclass(frozen=True)
class Actor:
    """Who acts: an HQ console account (source ``web``) or someone at a terminal (``cli``)."""

    name: str
    source: str = "cli"

    @classmethod
    def terminal(cls, name: str | None = None) -> Actor:
        """The person running a command: ``--actor`` when given, else the login name."""
        if name:
            return cls(name[:64], "cli")
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container)
            who = "unknown"
        return cls(who[:64], "cli")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def record(
    session: Session,
    actor: Actor,
    action: str,
    subject: str,
    at: datetime,
    *,
    before: Any = None,
    after: Any = None,
    store_id: str = "",
) -> AuditRecord:
    """Add one audit row to ``session`` (the transaction of the change itself)."""
    row = AuditRecord(
        at=at,
        actor=actor.name[:64],
        source=actor.source,
        action=action[:48],
        subject=subject[:128],
        store_id=store_id[:64],
        before=_json(before),
        after=_json(after),
    )
    session.add(row)
    return row


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    source: str
    action: str
    subject: str
    store_id: str
    before: Any
    after: Any

    def changes(self) -> list[tuple[str, Any, Any]]:
        """The fields that differ between before and after (both dicts), else one row."""
        if isinstance(self.before, dict) and isinstance(self.after, dict):
            keys: Iterable[str] = sorted(set(self.before) | set(self.after))
            return [
                (k, self.before.get(k), self.after.get(k))
                for k in keys
                if self.before.get(k) != self.after.get(k)
            ]
        return [("", self.before, self.after)]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def entries(
    session: Session,
    *,
    text: str = "",
    actor: str = "",
    before_id: int | None = None,
    limit: int = 100,
) -> tuple[list[AuditRow], int]:
    """The newest audit rows (matching ``text`` in action, subject or store, and ``actor``),
    older than ``before_id`` when paging, and how many match in all."""
    query = select(AuditRecord)
    count = select(func.count()).select_from(AuditRecord)
    conditions = []
    if text:
        pattern = _like(text)
        conditions.append(
            or_(
                AuditRecord.action.like(pattern, escape="\\"),
                AuditRecord.subject.like(pattern, escape="\\"),
                AuditRecord.store_id.like(pattern, escape="\\"),
            )
        )
    if actor:
        conditions.append(AuditRecord.actor == actor)
    for condition in conditions:
        query = query.where(condition)
        count = count.where(condition)
    total = session.scalar(count) or 0
    if before_id is not None:
        query = query.where(AuditRecord.id < before_id)
    rows = session.scalars(query.order_by(AuditRecord.id.desc()).limit(limit))
    return [
        AuditRow(
            r.id,
            r.at,
            r.actor,
            r.source,
            r.action,
            r.subject,
            r.store_id,
            json.loads(r.before),
            json.loads(r.after),
        )
        for r in rows
    ], total
