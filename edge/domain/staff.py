"""Staff roles, what each may do, and PIN lockout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from edge.domain.errors import InvalidInput, PermissionDenied


class Role(StrEnum):
    CLERK = "clerk"
    SUPERVISOR = "supervisor"
    TECHNICIAN = "technician"


class Permission(StrEnum):
    LOOKUP_MEMBER = "lookup_member"
    REPORT_LOST_CARD = "report_lost_card"
    REPLACE_CARD = "replace_card"
    RESTOCK = "restock"
    REPRINT_VOUCHER = "reprint_voucher"
    HAND_OVER_GIFT = "hand_over_gift"
    CLEAR_FAULT = "clear_fault"
    DAILY_REPORT = "daily_report"
    MANAGE_CATALOGUE = "manage_catalogue"
    DELETE_MEMBER = "delete_member"
    MANAGE_STAFF = "manage_staff"
    ADJUST_POINTS = "adjust_points"
    APPROVE_ADJUSTMENT = "approve_adjustment"
    TECHNICIAN_TOOLS = "technician_tools"


_CLERK = {
    Permission.LOOKUP_MEMBER,
    Permission.REPORT_LOST_CARD,
    Permission.REPLACE_CARD,
    Permission.RESTOCK,
    Permission.REPRINT_VOUCHER,
    Permission.HAND_OVER_GIFT,
    Permission.CLEAR_FAULT,
    Permission.DAILY_REPORT,
    Permission.ADJUST_POINTS,  # within [desk] adjust_approval_above; larger needs approval
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.CLERK: frozenset(_CLERK),
    Role.SUPERVISOR: frozenset(
        _CLERK
        | {
            Permission.MANAGE_CATALOGUE,
            Permission.DELETE_MEMBER,
            Permission.MANAGE_STAFF,
            Permission.APPROVE_ADJUSTMENT,
        }
    ),
    # Technicians keep devices running; they do not touch members' data or points.
    Role.TECHNICIAN: frozenset(
        {Permission.CLEAR_FAULT, Permission.TECHNICIAN_TOOLS, Permission.DAILY_REPORT}
    ),
}


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role '{text}' (one of: {roles})", code="bad_role") from None


def validate_staff_id(text: str) -> str:
    ident = text.strip()
    if not ident or len(ident) > 32 or not all(c.isalnum() or c in "-_." for c in ident):
        raise InvalidInput(
            f"'{text}' is not a valid staff id (letters, digits, - _ .)", code="bad_staff_id"
        )
    return ident


def require_permission(staff_id: str, role: str, permission: Permission) -> None:
    if permission not in ROLE_PERMISSIONS.get(Role(role), frozenset()):
        raise PermissionDenied(
            f"staff {staff_id} ({role}) may not {permission.value.replace('_', ' ')}",
            code="not_permitted",
            staff_id=staff_id,
            permission=permission.value,
        )


@dataclass(frozen=True)
class LockoutPolicy:
    max_attempts: int = 5
    lockout: timedelta = timedelta(minutes=30)


def check_not_locked(staff_id: str, locked_until: datetime | None, now: datetime) -> None:
    if locked_until is not None and now < locked_until:
        minutes = int((locked_until - now).total_seconds() // 60) + 1
        raise PermissionDenied(
            f"staff {staff_id} is locked after too many wrong PINs; try again in {minutes} min",
            code="staff_locked",
            staff_id=staff_id,
            locked_until=locked_until.isoformat(),
        )


def after_failure(
    failed_attempts: int, now: datetime, policy: LockoutPolicy
) -> tuple[int, datetime | None]:
    """(new failed count, locked until) after a wrong PIN; the count resets when it locks."""
    failed = failed_attempts + 1
    if failed >= policy.max_attempts:
        return 0, now + policy.lockout
    return failed, None
