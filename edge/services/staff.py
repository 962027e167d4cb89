"""Staff use cases: add staff, authenticate with a PIN (lockout after repeated failures)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import PermissionDenied, Refusal
from edge.domain.staff import (
    LockoutPolicy,
    Permission,
    after_failure,
    check_not_locked,
    parse_role,
    require_permission,
    validate_staff_id,
)
from edge.domain.text import fold_digits
from edge.security.pins import hash_pin, validate_pin, verify_pin
from edge.services.staff_lists import hq_manages_staff, listed_by_hq
from edge.services.tx import Tx, transaction
from edge.storage.models import Staff


@dataclass(frozen=True)
class StaffIdentity:
    """Proof that a staff member authenticated; services that need staff take one."""

    staff_id: str
    role: str


def require(staff: StaffIdentity, permission: Permission) -> None:
    require_permission(staff.staff_id, staff.role, permission)


def staff_count(app: AppContext) -> int:
    with app.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Staff)) or 0)


def add_staff(
    app: AppContext,
    staff_id: str,
    role: str,
    pin: str,
    name: str = "",
    by: StaffIdentity | None = None,
) -> StaffIdentity:
    """Adds a staff member. The very first one needs no authoriser; later ones a supervisor.

    Once HQ's staff list for the store is in force, HQ alone adds staff (``kiosk hq staff
    add``): adding one here is refused.
    """
    ident = validate_staff_id(staff_id)
    role_v = parse_role(role)
    validate_pin(pin)
    pin_hash = hash_pin(pin)
    with transaction(app) as tx:
        if hq_manages_staff(tx.session):
            raise PermissionDenied(
                f"staff accounts of store {app.store_id} are managed by HQ: "
                "add them there (kiosk hq staff add)",
                code="staff_managed_by_hq",
            )
        existing = tx.session.scalar(select(func.count()).select_from(Staff)) or 0
        if existing and by is None:
            raise PermissionDenied(
                "adding staff needs a supervisor's authorisation (--by)", code="not_permitted"
            )
        if by is not None:
            require(by, Permission.MANAGE_STAFF)
        if tx.session.get(Staff, ident) is not None:
            raise Refusal(f"staff id {ident} already exists", code="staff_exists")
        tx.session.add(
            Staff(
                id=ident,
                name=name.strip()[:32],
                role=role_v.value,
                pin_hash=pin_hash,
                failed_attempts=0,
                locked_until=None,
                active=True,
                created_at=tx.now,
            )
        )
        tx.audit(by.staff_id if by else "console", "staff.add", ident, role=role_v.value)
    return StaffIdentity(ident, role_v.value)


def recheck_staff(app: AppContext, identity: StaffIdentity) -> StaffIdentity:
    """``identity`` as the account stands now, for a sign-in that lasts (the touchscreen's
    session): HQ may have disabled it or changed its role since the PIN was entered.

    Raises:
        PermissionDenied: ``staff_disabled`` (HQ disabled it), ``staff_not_listed``, or
            ``staff_session_expired`` when the account is gone.
    """
    with app.db.read() as session:
        staff = session.get(Staff, identity.staff_id)
        if staff is None:
            raise PermissionDenied("please sign in again", code="staff_session_expired")
        if _may_sign_in(session, app, staff):
            return StaffIdentity(staff.id, staff.role)
        raise _refusal(session, app, staff)


def authenticate_staff(
    app: AppContext, staff_id: str, pin: str, permission: Permission | None = None
) -> StaffIdentity:
    """Checks a staff PIN; the 5th wrong PIN in a row locks the account for 30 minutes.

    The failure count is committed even though authentication fails, so a locked account
    stays locked across processes and restarts. A PIN with another script's numerals is
    refused before anything is counted: it is a typing problem, not a guess.

    Once HQ's staff list is in force, an account it disabled (or one of this device that is
    not on the list) is refused at the next sign-in: the right PIN gets ``staff_disabled``
    ("this account was disabled by HQ") or ``staff_not_listed``, a wrong one the usual
    answer and a count towards the lockout, so neither tells a guesser more than before.
    """
    ident = validate_staff_id(staff_id)
    pin = fold_digits(pin, "a PIN", code="weak_pin", reason="digits")
    sec = app.config.security
    policy = LockoutPolicy(sec.pin_max_attempts, timedelta(minutes=sec.pin_lockout_minutes))
    outcome: StaffIdentity | PermissionDenied
    with transaction(app) as tx:
        staff = tx.session.get(Staff, ident)
        managed = hq_manages_staff(tx.session)
        if staff is None or not (staff.active or managed):
            verify_pin(pin, _dummy_hash())  # same cost either way: no oracle for valid ids
            tx.audit(ident, "staff.auth_failed", ident, reason="unknown")
            outcome = PermissionDenied("unknown staff id or wrong PIN", code="bad_credentials")
        else:
            try:
                check_not_locked(ident, staff.locked_until, tx.now)
            except PermissionDenied as locked_error:
                tx.audit(ident, "staff.auth_refused", ident, reason="locked")
                outcome = locked_error
            else:
                outcome = _check_pin(tx, app, staff, pin, permission, policy)
    if isinstance(outcome, PermissionDenied):
        raise outcome
    return outcome


@functools.cache
def _dummy_hash() -> str:
    return hash_pin("80417")


def _check_pin(
    tx: Tx,
    app: AppContext,
    staff: Staff,
    pin: str,
    permission: Permission | None,
    policy: LockoutPolicy,
) -> StaffIdentity | PermissionDenied:
    if not verify_pin(pin, staff.pin_hash):
        staff.failed_attempts, staff.locked_until = after_failure(
            staff.failed_attempts, tx.now, policy
        )
        locked = staff.locked_until is not None
        tx.audit(staff.id, "staff.auth_failed", staff.id, locked=locked)
        if locked:
            minutes = int(policy.lockout.total_seconds() // 60)
            return PermissionDenied(
                f"wrong PIN; staff {staff.id} is locked for {minutes} minutes",
                code="staff_locked",
            )
        return PermissionDenied("unknown staff id or wrong PIN", code="bad_credentials")
    if not _may_sign_in(tx.session, app, staff):
        refusal = _refusal(tx.session, app, staff)
        tx.audit(staff.id, "staff.auth_refused", staff.id, reason=refusal.code)
        return refusal
    staff.failed_attempts = 0
    staff.locked_until = None
    identity = StaffIdentity(staff.id, staff.role)
    if permission is not None:
        try:
            require(identity, permission)
        except PermissionDenied as denied:
            tx.audit(staff.id, "staff.denied", staff.id, permission=permission.value)
            return denied
    tx.audit(staff.id, "staff.login", staff.id)
    return identity


def _may_sign_in(session: Session, app: AppContext, staff: Staff) -> bool:
    """An enabled account, and once HQ manages the staff here, one on this store's list."""
    if not staff.active:
        return False
    return not hq_manages_staff(session) or listed_by_hq(session, app.store_id, staff.id)


def _refusal(session: Session, app: AppContext, staff: Staff) -> PermissionDenied:
    """Why an account :func:`_may_sign_in` refuses does not sign in (said only to the right
    PIN, or to a session already open)."""
    if listed_by_hq(session, app.store_id, staff.id):
        return PermissionDenied(
            f"staff {staff.id}: this account was disabled by HQ",
            code="staff_disabled",
            staff_id=staff.id,
        )
    return PermissionDenied(
        f"staff {staff.id} is not on HQ's staff list for store {app.store_id}; "
        "HQ manages this store's staff accounts",
        code="staff_not_listed",
        staff_id=staff.id,
    )
