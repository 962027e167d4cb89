"""How a device is doing, in one frozen value: ok, degraded with a reason, or failed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HealthState(StrEnum):
    """Ordered from good to bad so that the worst of several can be taken."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


_RANK = {HealthState.OK: 0, HealthState.DEGRADED: 1, HealthState.FAILED: 2}


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
