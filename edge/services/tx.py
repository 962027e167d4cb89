"""One transaction per use case: the change, its ledger entries, an audit record, outbox events.

A request id makes a use case idempotent: the first run records it with the result's key; a
retry (a double tap, a resent command, a restart after a crash) finds it and returns the same
result without applying anything twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import InvalidInput, Refusal
from edge.security.chain import GENESIS, chain_hash
from edge.services.personal import OUTBOX_FIELD, sealed_for_outbox
from edge.storage.models import AuditRecord, Meta, OutboxEvent, ProcessedRequest

R = TypeVar("R")

AUDIT_HEAD = "audit_head"


@dataclass
class Tx:
    """An open write transaction and the facts every record in it shares."""

    app: AppContext
    session: Session
    now: datetime

    def new_id(self) -> str:
        return self.app.ids.new()

    def audit(self, actor: str, action: str, subject: str = "", **detail: Any) -> None:
        """Appends a hash-chained audit record (the chain head is kept in ``meta``)."""
        head = self.session.get(Meta, AUDIT_HEAD)
        prev = head.value if head is not None else GENESIS
        detail_json = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
        record = audit_fields(self.now, actor, action, subject, detail_json)
        digest = chain_hash(prev, record)
        self.session.add(
            AuditRecord(
                at=self.now,
                actor=actor,
                action=action,
                subject=subject,
                detail=detail_json,
                prev_hash=prev,
                hash=digest,
            )
        )
        if head is None:
            self.session.add(Meta(key=AUDIT_HEAD, value=digest))
        else:
            head.value = digest

    def emit(
        self, kind: str, payload: dict[str, Any], personal: Mapping[str, Any] | None = None
    ) -> str:
        """Queues a business event for HQ; it leaves only if this transaction commits.

        ``personal``: fields of the event's data that are a member's personal data (name,
        birthday); they wait in the outbox encrypted and join the data as the event is sent
        (:mod:`edge.services.personal`).
        """
        event_id = self.new_id()
        body = {
            "event_id": event_id,
            "kind": kind,
            "store_id": self.app.store_id,
            "device_id": self.app.device_id,
            "at": self.now.isoformat(),
            "data": payload,
        }
        sealed = sealed_for_outbox(self.app, personal) if personal else None
        if sealed is not None:
            body[OUTBOX_FIELD] = sealed
        self.session.add(
            OutboxEvent(
                event_id=event_id,
                kind=kind,
                payload=json.dumps(body, ensure_ascii=False, sort_keys=True, default=str),
                created_at=self.now,
            )
        )
        return event_id


def audit_fields(
    at: datetime, actor: str, action: str, subject: str, detail_json: str
) -> dict[str, Any]:
    """The fields an audit record's hash covers."""
    return {
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail_json,
    }


@contextmanager
def transaction(app: AppContext) -> Iterator[Tx]:
    """A write transaction (BEGIN IMMEDIATE on SQLite); everything in it commits or nothing.

    Raises:
        DiskFull: the disk is full (``disk_full``): rolled back, nothing was changed. Every
            use case reports a full disk this way, whatever statement or commit found it.
    """
    now = app.clock()
    app.rules_due(now)  # HQ's rules scheduled for this moment are in force for this write
    with app.db.write() as session:
        yield Tx(app, session, now)


def validate_request_id(request_id: str) -> str:
    rid = request_id.strip()
    if not 1 <= len(rid) <= 64 or not all(c.isalnum() or c in "-_.:" for c in rid):
        raise InvalidInput("a request id is 1-64 letters, digits or - _ . :", code="bad_request_id")
    return rid


def run_once(
    app: AppContext,
    request_id: str | None,
    intent: str,
    fingerprint: dict[str, Any],
    apply: Callable[[Tx], tuple[R, str]],
    replay: Callable[[Tx, str], R],
) -> R:
    """Runs ``apply`` once per request id.

    ``apply`` returns (result, key): the key (e.g. a redemption id) is stored with the request.
    On a retry, ``replay(tx, key)`` rebuilds the same result from what was stored. Reusing a
    request id for a different request is refused rather than silently answered.
    """
    with transaction(app) as tx:
        if request_id is None:
            return apply(tx)[0]
        rid = validate_request_id(request_id)
        seen = tx.session.get(ProcessedRequest, rid)
        if seen is not None:
            stored = json.loads(seen.result)
            if seen.intent != intent or stored.get("fingerprint") != fingerprint:
                raise Refusal(
                    f"request id {rid} was already used for a different request",
                    code="request_id_reused",
                )
            return replay(tx, str(stored["key"]))
        result, key = apply(tx)
        tx.session.add(
            ProcessedRequest(
                request_id=rid,
                intent=intent,
                result=json.dumps({"key": key, "fingerprint": fingerprint}, sort_keys=True),
                created_at=tx.now,
            )
        )
        return result


def get_meta(session: Session, key: str) -> str | None:
    return session.scalar(select(Meta.value).where(Meta.key == key))


def set_meta(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value
