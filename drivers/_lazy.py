"""Lazy import of optional hardware libraries, with an error that says how to get them."""

from __future__ import annotations

import importlib
from types import ModuleType

from drivers.errors import DeviceUnavailableError
from drivers.health import Health


def require(module: str, hint: str) -> ModuleType:
    """Imports ``module`` or raises :class:`DeviceUnavailableError` naming the package to install.

    Hardware libraries (picamera2, lgpio, pyusb) exist only on the appliance; importing them
    at module level would break the simulator on a laptop.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DeviceUnavailableError(
            Health.failed("library_missing", f"{module} is not importable ({exc}); {hint}")
        ) from exc
