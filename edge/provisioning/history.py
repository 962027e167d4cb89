"""The device's provisioning history, kept in its database's hash-chained audit log.

Pairing, enrolment, re-enrolment, a move to another store and taking over a replaced
device's place are audit records like every other use case's (actions ``provision.*``), in
the same chain ``kiosk ledger verify`` checks. Provisioning often runs before the kiosk has
ever started: the database is created (and its schema brought up to date) when missing.

Devices enrolled before the history moved into the audit log kept it in
``provisioning/audit.jsonl``; such a device still counts as enrolled.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import IntegrityError
from edge.services.tx import Tx, transaction
from edge.services.verify import VerifyReport, verify_audit
from edge.storage.models import AuditRecord

ACTION_PREFIX = "provision."
PAIRING = "provision.pairing"
ENROL = "provision.enrol"
REENROL = "provision.reenrol"
MOVE = "provision.move"
REPLACE = "provision.replace"
APPLIED = (ENROL, REENROL, MOVE, REPLACE)  # the actions that give the device an identity
LEGACY_LOG = Path("provisioning/audit.jsonl")  # the history of devices enrolled before

_APPLIED_QUERY = (
    f"SELECT EXISTS (SELECT 1 FROM {AuditRecord.__tablename__} "
    f"WHERE action IN ({', '.join('?' * len(APPLIED))}))"
)


def _open(data_dir: Path, config_path: Path | None) -> AppContext:
    """The device's app context; a blank device (no config file yet) gets the defaults."""
    if config_path is not None and not config_path.exists():
        config_path = None
    return AppContext.open(data_dir, config_path)


@contextmanager
def record_provisioning(data_dir: Path, config_path: Path | None = None) -> Iterator[Tx]:
    """A write transaction on the device's database (opened, or created, for it).

    Whatever the caller does inside the block commits with its audit records, or not at all.
    """
    app = _open(data_dir, config_path)
    try:
        with transaction(app) as tx:
            yield tx
    finally:
        app.close()


def enrolled_before(data_dir: Path) -> bool:
    """Whether the device was enrolled when its history was kept in ``audit.jsonl``."""
    legacy = data_dir / LEGACY_LOG
    try:
        return legacy.stat().st_size > 0
    except OSError:
        return False


def has_applied_enrolment(database: Path) -> bool:
    """Whether the audit log in the SQLite file ``database`` records an applied enrolment.

    One query on a read-only connection: nothing is created, migrated or walked (the chain
    is checked by :func:`read_provisioning_history`). A missing database, or one without an
    audit log yet, has none.
    """
    if not database.is_file():
        return False
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as db:
            (found,) = db.execute(_APPLIED_QUERY, APPLIED).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    return bool(found)


def _check_chain(session: Session) -> None:
    """The whole audit chain and its head, as ``kiosk ledger verify`` checks them.

    Raises:
        IntegrityError: ``audit_broken``, naming the first break.
    """
    report = VerifyReport()
    verify_audit(session, report)
    if not report.ok:
        raise IntegrityError(report.problems[0], code="audit_broken")


def read_provisioning_history(
    data_dir: Path, config_path: Path | None = None
) -> list[dict[str, Any]]:
    """Every provisioning record, oldest first, after checking the whole audit chain.

    Each record is ``{"seq", "at", "actor", "action", "subject", **detail}``.

    Raises:
        IntegrityError: ``audit_broken``: an audit record was altered or removed.
    """
    app = _open(data_dir, config_path)
    try:
        with app.db.read() as session:
            _check_chain(session)
            rows = session.scalars(
                select(AuditRecord)
                .where(AuditRecord.action.like(f"{ACTION_PREFIX}%"))
                .order_by(AuditRecord.seq)
            )
            return [
                {
                    **json.loads(row.detail),
                    "seq": row.seq,
                    "at": row.at.isoformat(),
                    "actor": row.actor,
                    "action": row.action,
                    "subject": row.subject,
                }
                for row in rows
            ]
    finally:
        app.close()
