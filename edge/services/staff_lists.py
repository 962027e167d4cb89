"""HQ's staff list for this kiosk's store: who may sign in here, with which role and PIN.

HQ keeps the staff accounts of every store and pushes each store's whole list, signed with
its command key and versioned (``kiosk hq staff ...``). Applying it is all or nothing, in one
transaction with its audit record: accounts on the list are created or updated (name, role,
PIN hash, enabled or disabled); every account of this device not on it is disabled. From the
first list on, HQ manages the store's staff: a local ``kiosk staff add`` is refused, and only
an account HQ lists, and has not disabled, signs in. Before it, the device's own accounts
(the set-up account and those a supervisor added) work as they always did. A device moved
to another store takes that store's list whatever its version, and until it comes no
account signs in: the accounts of the store it left are not this store's.

Lockout counters stay local: a new list changes neither the failed attempts nor a lockout.
The list is applied by :func:`edge.services.pushes.apply_staff_list`, with HQ's other
pushes; this module says what is in force.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from edge.services.tx import get_meta

STAFF_LIST_VERSION = "staff_list_version"
HQ_STAFF_IDS = "hq_staff_ids"  # JSON list of the ids on the list in force
HQ_STAFF_STORE = "hq_staff_store"  # the store the list in force is for


def hq_manages_staff(session: Session) -> bool:
    """Whether a list from HQ was ever put in force here: from then on only the accounts on
    this store's list sign in (none, on a device moved to another store, until that store's
    list arrives)."""
    return bool(get_meta(session, STAFF_LIST_VERSION))


def staff_list_version(session: Session, store_id: str) -> int:
    """The version of HQ's staff list for ``store_id`` in force here; 0 for none (or only
    another store's, on a device moved since)."""
    if get_meta(session, HQ_STAFF_STORE) != store_id:
        return 0
    return int(get_meta(session, STAFF_LIST_VERSION) or 0)


def listed_by_hq(session: Session, store_id: str, staff_id: str) -> bool:
    """Whether ``staff_id`` is on HQ's staff list for ``store_id`` in force here."""
    if get_meta(session, HQ_STAFF_STORE) != store_id:
        return False
    return staff_id in json.loads(get_meta(session, HQ_STAFF_IDS) or "[]")
