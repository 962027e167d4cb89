"""HQ's staff list for this kiosk's store: who may sign in here, with which role and PIN.

HQ keeps the staff accounts of every store and pushes each store's whole list, signed with
its command key and versioned (``kiosk hq staff ...``). Applying it is all or nothing, in one
transaction with its audit record: accounts on the list are created or updated (name, role,
PIN hash, enabled or disabled); every account of this device not on it is disabled. From the
first list on, HQ manages the store's staff: a local ``kiosk staff add`` is refused, and only
an account HQ lists, and has not disabled, signs in. Before it, the device's own accounts
(the set-up account and those a supervisor added) work as they always did.

Lockout counters stay local: a new list changes neither the failed attempts nor a lockout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.protocol import STAFF_SIGNING_DOMAIN, StaffList
from edge.security.signing import verify_bytes
from edge.services.tx import get_meta, set_meta, transaction
from edge.storage.models import Staff

log = logging.getLogger(__name__)

STAFF_LIST_VERSION = "staff_list_version"
HQ_STAFF_IDS = "hq_staff_ids"  # JSON list of the ids on the list in force


@dataclass(frozen=True)
class StaffListOutcome:
    """What applying a list did: ``applied``, or why not (``reason``)."""

    applied: bool
    reason: str = ""
    version: int = 0


def staff_list_signed(staff_list: StaffList, public_key: Ed25519PublicKey | None) -> bool:
    """Whether HQ's command key signed ``staff_list`` (False without a key to check it with)."""
    return public_key is not None and verify_bytes(
        public_key, STAFF_SIGNING_DOMAIN, staff_list.signed_bytes(), staff_list.signature_bytes()
    )


def apply_staff_list(
    app: AppContext, staff_list: StaffList, public_key: Ed25519PublicKey | None
) -> StaffListOutcome:
    """Puts HQ's staff list for this store in force here.

    A list HQ's command key did not sign, one for another store, or one not newer than the
    list in force changes nothing (a log line says why; the agent goes on).
    """
    if not staff_list_signed(staff_list, public_key):
        log.warning(
            "staff list version %s refused: not signed by HQ's command key", staff_list.version
        )
        return StaffListOutcome(False, "bad signature")
    if staff_list.store_id != app.store_id:
        log.warning(
            "staff list of store %s refused: this kiosk is in store %s",
            staff_list.store_id,
            app.store_id,
        )
        return StaffListOutcome(False, "another store")
    with transaction(app) as tx:
        current = int(get_meta(tx.session, STAFF_LIST_VERSION) or 0)
        if staff_list.version <= current:
            if staff_list.version < current:
                log.warning(
                    "staff list version %s refused: version %s is in force",
                    staff_list.version,
                    current,
                )
            return StaffListOutcome(False, "not newer", current)
        listed = {a.staff_id for a in staff_list.accounts}
        added, changed = [], []
        for account in staff_list.accounts:
            staff = tx.session.get(Staff, account.staff_id)
            if staff is None:
                tx.session.add(
                    Staff(
                        id=account.staff_id,
                        name=account.name,
                        role=account.role,
                        pin_hash=account.pin_hash,
                        failed_attempts=0,
                        locked_until=None,
                        active=account.active,
                        created_at=tx.now,
                    )
                )
                added.append(account.staff_id)
                continue
            before = (staff.name, staff.role, staff.pin_hash, staff.active)
            staff.name, staff.role = account.name, account.role
            staff.pin_hash, staff.active = account.pin_hash, account.active
            if before != (staff.name, staff.role, staff.pin_hash, staff.active):
                changed.append(account.staff_id)
        unlisted = [
            staff
            for staff in tx.session.scalars(select(Staff).where(Staff.active.is_(True)))
            if staff.id not in listed
        ]
        for staff in unlisted:
            staff.active = False  # HQ manages the store now: its list alone signs in
        set_meta(tx.session, STAFF_LIST_VERSION, str(staff_list.version))
        set_meta(tx.session, HQ_STAFF_IDS, json.dumps(sorted(listed)))
        tx.audit(
            "hq",
            "staff.list",
            str(staff_list.version),
            added=added,
            changed=changed,
            disabled=sorted(a.staff_id for a in staff_list.accounts if not a.active),
            local_disabled=sorted(s.id for s in unlisted),
        )
    log.info(
        "staff list version %s in force: %d account(s)",
        staff_list.version,
        len(staff_list.accounts),
    )
    return StaffListOutcome(True, version=staff_list.version)


def staff_list_version(session: Session) -> int:
    """The version of HQ's staff list in force here; 0 while the device's own accounts rule."""
    return int(get_meta(session, STAFF_LIST_VERSION) or 0)


def listed_by_hq(session: Session, staff_id: str) -> bool:
    """Whether ``staff_id`` is on HQ's staff list in force here."""
    return staff_id in json.loads(get_meta(session, HQ_STAFF_IDS) or "[]")
