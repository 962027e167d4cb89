"""Code scanners: cameras with the decode pipeline, serial scan engines, and simulators.

The camera side (the decoder, the live stream, the simulated camera, frames) needs NumPy,
OpenCV, zxing-cpp and ZBar; those names are loaded on first use, so a kiosk with a serial
scan engine never loads the image libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from drivers.scanner.code import MEMBER_CENTER_SYMBOLOGIES, Code, Symbology
from drivers.scanner.debounce import Debouncer
from drivers.scanner.interface import Camera, CodeScanner
from drivers.scanner.serial_engine import SerialScanEngine, classify
from drivers.scanner.virtual_engine import VirtualScanEngineLink

if TYPE_CHECKING:
    from drivers.scanner.decode import CodeDecoder, DecodeSettings
    from drivers.scanner.interface import Frame
    from drivers.scanner.presented import LocatedCode, ScanResult
    from drivers.scanner.sim import SimulatedCamera
    from drivers.scanner.stream import CameraScanner

_CAMERA_SIDE = {
    "CameraScanner": "drivers.scanner.stream",
    "CodeDecoder": "drivers.scanner.decode",
    "DecodeSettings": "drivers.scanner.decode",
    "Frame": "drivers.scanner.interface",
    "LocatedCode": "drivers.scanner.presented",
    "ScanResult": "drivers.scanner.presented",
    "SimulatedCamera": "drivers.scanner.sim",
}


def __getattr__(name: str) -> Any:
    module = _CAMERA_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "MEMBER_CENTER_SYMBOLOGIES",
    "Camera",
    "CameraScanner",
    "Code",
    "CodeDecoder",
    "CodeScanner",
    "Debouncer",
    "DecodeSettings",
    "Frame",
    "LocatedCode",
    "ScanResult",
    "SerialScanEngine",
    "SimulatedCamera",
    "Symbology",
    "VirtualScanEngineLink",
    "classify",
]
