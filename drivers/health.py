"""How a device is doing, in one frozen value: ok, degraded with a reason, or failed.

:class:`HealthState` is the one vocabulary of health: drivers report it, the station records
it for telemetry, ``kiosk doctor`` prints it, and the protocol's ``DeviceHealth`` carries its
words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HealthState(StrEnum):
    """Ranked from good to bad so that the worst of several can be taken.

    ``UNKNOWN`` is no reading at all: no driver reports it; telemetry says it of a peripheral
    whose recorded state is a word this version does not know.
    """

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, word: str) -> HealthState:
        """The state ``word`` names, :attr:`UNKNOWN` for any other word."""
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN


# Not knowing is as bad as a known fault that still lets the device work.
_RANK = {HealthState.OK: 0, HealthState.UNKNOWN: 1, HealthState.DEGRADED: 1, HealthState.FAILED: 2}


@dataclass(frozen=True)
class Health:
    """A device's health; ``reason`` says what a technician should look at.

    ``code`` is a stable machine word (``paper_low``, ``jam``, ``disconnected``) that HQ
    counts and the touchscreen translates; ``reason`` is English for the console.
    """

    state: HealthState
    reason: str = ""
    code: str = ""

    @classmethod
    def ok(cls) -> Health:
        return cls(HealthState.OK)

    @classmethod
    def degraded(cls, code: str, reason: str) -> Health:
        return cls(HealthState.DEGRADED, reason, code)

    @classmethod
    def failed(cls, code: str, reason: str) -> Health:
        return cls(HealthState.FAILED, reason, code)

    @property
    def is_ok(self) -> bool:
        return self.state is HealthState.OK

    def worse_than(self, other: Health) -> bool:
        return _RANK[self.state] > _RANK[other.state]


def worst(*healths: Health) -> Health:
    """The most serious of several health values (the first of equals)."""
    result = Health.ok()
    for health in healths:
        if health.worse_than(result):
            result = health
    return result
