"""Code scanners: cameras with the decode pipeline, serial scan engines, and simulators."""

from drivers.scanner.code import MEMBER_CENTER_SYMBOLOGIES, Code, Symbology
from drivers.scanner.debounce import Debouncer
from drivers.scanner.decode import CodeDecoder, DecodeSettings
from drivers.scanner.interface import Camera, CodeScanner, Frame
from drivers.scanner.presented import LocatedCode, ScanResult
from drivers.scanner.serial_engine import SerialScanEngine, classify
from drivers.scanner.sim import SimulatedCamera
from drivers.scanner.stream import CameraScanner
from drivers.scanner.virtual_engine import VirtualScanEngineLink

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
