"""Hardware library: one interface per device kind, real backends and simulators.

Import the device packages (``drivers.scanner``, ``drivers.printer``, ``drivers.dispenser``,
``drivers.gpio``) or :mod:`drivers.factory`; this package itself loads no device library.
"""

from drivers.errors import DeviceError, DeviceTimeoutError, DeviceUnavailableError, ProtocolError
from drivers.health import Health, HealthState, worst

__all__ = [
    "DeviceError",
    "DeviceTimeoutError",
    "DeviceUnavailableError",
    "Health",
    "HealthState",
    "ProtocolError",
    "worst",
]
