"""The device's provisioning history, kept in its database's hash-chained audit log.

Pairing, enrolment, re-enrolment, a move to another store and taking over a replaced
device's place are audit records like every other use case's (actions ``provision.*``), in
the same chain ``kiosk ledger verify`` checks. Provisioning often runs before the kiosk has
ever started: the database is created (and its schema brought up to date) when missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.errors import IntegrityError
from edge.security.chain import GENESIS, chain_hash
from edge.services.tx import AUDIT_HEAD, Tx, audit_fields, get_meta, transaction
from edge.storage.models import AuditRecord

ACTION_PREFIX = "provision."
PAIRING = "provision.pairing"
ENROL = "provision.enrol"
REENROL = "provision.reenrol"
MOVE = "provision.move"
REPLACE = "provision.replace"


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
            prev = GENESIS
            found: list[dict[str, Any]] = []
            for row in session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars():
                fields = audit_fields(row.at, row.actor, row.action, row.subject, row.detail)
                if row.prev_hash != prev or row.hash != chain_hash(prev, fields):
                    raise IntegrityError(
                        f"audit record #{row.seq} was altered or a record before it removed",
                        code="audit_broken",
                    )
                prev = row.hash
                if row.action.startswith(ACTION_PREFIX):
                    found.append(
                        {
                            **json.loads(row.detail),
                            "seq": row.seq,
                            "at": row.at.isoformat(),
                            "actor": row.actor,
                            "action": row.action,
                            "subject": row.subject,
                        }
                    )
            if (get_meta(session, AUDIT_HEAD) or GENESIS) != prev:
                raise IntegrityError("the latest audit records were removed", code="audit_broken")
    finally:
        app.close()
    return found
