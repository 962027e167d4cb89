"""Refusals: every rule that says no says why, with a stable code the UI translates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class KioskError(Exception):
    """Base of every error the appliance reports to a person.

    ``code`` is stable (the touchscreen app and HQ translate and count by it); ``message`` is a
    plain English sentence for the console and logs; ``details`` carries the numbers behind it.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class Refusal(KioskError):
    """A business rule refused the request; nothing was changed."""

    code = "refused"


class InvalidInput(KioskError):
    """The request itself is malformed (a bad phone number, a negative amount, ...)."""

    code = "invalid_input"


class NotFound(KioskError):
    """The member, card, gift or staff member asked for does not exist."""

    code = "not_found"


class PermissionDenied(KioskError):
    """The staff member is not allowed to do this, or failed to authenticate."""

    code = "permission_denied"


class ConfigError(KioskError):
    """The configuration file is missing, unreadable or invalid."""

    code = "config_error"


class DiskFull(KioskError):
    """The disk holding the data is full: what was asked was not done and nothing changed.

    Not a :class:`Refusal` (no rule said no: it may work once space is freed), but reported
    the same way: one line, code ``disk_full``. ``not_done`` says what was not done (``"no
    backup was made"``); ``where`` is the directory to free space in.
    """

    code = "disk_full"

    def __init__(self, not_done: str = "", *, where: str = "", **details: Any) -> None:
        clause = not_done or "nothing was done"
        place = f" in {where}" if where else " on the device"
        super().__init__(
            f"the disk is full: {clause} and nothing was changed"
            f" (free some space{place}, then try again)",
            not_done=clause,
            where=where,
            **details,
        )
        self.not_done = clause
        self.where = where
        self.specific = bool(not_done)

    def saying(self, not_done: str) -> DiskFull:
        """The same error saying what was not done (the caller knows; the storage does not)."""
        return DiskFull(not_done, where=self.where)


class IntegrityError(KioskError):
    """Stored data breaks an invariant (a ledger that does not add up, a broken audit chain)."""

    code = "integrity"


def describe_invalid(errors: Iterable[Mapping[str, Any]]) -> str:
    """A settings validation's errors (pydantic's ``errors()``) in one line naming each key."""
    parts = []
    for item in errors:
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"'{where}': {item['msg']}")
    return "; ".join(parts)
