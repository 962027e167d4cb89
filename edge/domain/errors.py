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
