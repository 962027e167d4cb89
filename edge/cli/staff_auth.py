"""Staff sign-in on the console: the PIN comes from a prompt or standard input, never argv."""

from __future__ import annotations

from edge.app import AppContext
from edge.console import read_secret
from edge.domain.staff import Permission
from edge.services.staff import StaffIdentity, authenticate_staff


def staff_login(app: AppContext, staff_id: str, permission: Permission) -> StaffIdentity:
    pin = read_secret(f"PIN for {staff_id}")
    return authenticate_staff(app, staff_id, pin, permission)
