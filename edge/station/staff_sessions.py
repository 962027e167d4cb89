"""Staff signed in at the touchscreen: a token per sign-in, good for a quarter of an hour.

The screen holds only the token (:class:`edge.station.api.StaffSession`); each staff action
hands it back and is checked here for expiry, for the account as it stands now (HQ may have
disabled it) and for the permission it needs, before the service checks that permission
again.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta

from edge.app import AppContext
from edge.domain.errors import PermissionDenied
from edge.domain.staff import Permission
from edge.services.staff import StaffIdentity, authenticate_staff, recheck_staff, require
from edge.station.api import StaffSession

STAFF_SESSION_TTL = timedelta(minutes=15)


class StaffSessions:
    def __init__(self, app: AppContext) -> None:
        self.app = app
        self._held: dict[str, tuple[StaffIdentity, datetime]] = {}
        self._lock = threading.Lock()

    def sign_in(self, staff_id: str, pin: str, permission: str) -> StaffSession:
        identity = authenticate_staff(self.app, staff_id, pin, Permission(permission))
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._held[token] = (identity, self.app.clock() + STAFF_SESSION_TTL)
        return StaffSession(identity.staff_id, identity.role, token)

    def sign_out(self, staff: StaffSession) -> None:
        with self._lock:
            self._held.pop(staff.token, None)

    def identity(self, staff: StaffSession, permission: Permission) -> StaffIdentity:
        """Who holds ``staff``'s session, if it is still good and allows ``permission``.

        The account is read again on every action: one HQ disabled since the sign-in ends
        its session at once (and a role HQ changed counts from the next action).

        Raises:
            PermissionDenied: ``staff_session_expired``, ``staff_disabled``,
                ``staff_not_listed``, or the missing permission.
        """
        with self._lock:
            held = self._held.get(staff.token)
            if held is None or held[1] <= self.app.clock():
                self._held.pop(staff.token, None)
                raise PermissionDenied("please sign in again", code="staff_session_expired")
        try:
            identity = recheck_staff(self.app, held[0])
        except PermissionDenied:
            with self._lock:
                self._held.pop(staff.token, None)
            raise
        require(identity, permission)
        return identity
