"""Errors a device raises; each carries the health it leaves the device in."""

from __future__ import annotations

from drivers.health import Health


class DeviceError(Exception):
    """A device could not do what was asked; ``health`` says why and how bad."""

    def __init__(self, health: Health) -> None:
        super().__init__(health.reason)
        self.health = health


class DeviceTimeoutError(DeviceError):
    """The device did not answer within its I/O timeout."""


class DeviceUnavailableError(DeviceError):
    """The device or the library that drives it is absent (unplugged, not installed)."""


class ProtocolError(DeviceError):
    """The device answered with bytes that do not follow its protocol."""
