"""Builds every device from :class:`HardwareConfig`: the one place that maps config to classes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.config import DispenserConfig, GpioConfig, HardwareConfig, PrinterConfig, ScannerConfig
from drivers.dispenser import CardDispenser, SerialDispenser, VirtualDispenserLink
from drivers.gpio import GpioPanel, SimulatedPanel
from drivers.printer import EscposPrinter, PrinterProfile, ReceiptPrinter, SimulatedPrinter
from drivers.scanner import CodeScanner, Debouncer, SerialScanEngine
from drivers.scanner.interface import Camera
from drivers.serialio import open_serial


def profile_for(config: PrinterConfig) -> PrinterProfile:
    name = f"{config.encoding}-{config.paper_mm}"
    return PrinterProfile(name, config.paper_mm, config.encoding, config.kanji_mode)


def open_camera(config: ScannerConfig) -> Camera:
    """The configured camera (not for the serial backend)."""
    if config.backend == "sim":
        from drivers.scanner.sim import SimulatedCamera

        return SimulatedCamera(config.images, size=(config.width, config.height))
    if config.backend == "opencv":
        from drivers.scanner.cameras import OpenCvCamera

        return OpenCvCamera(config.source or "0", config.width, config.height)
    if config.backend == "picamera2":
        from drivers.scanner.cameras import Picamera2Camera

        return Picamera2Camera(config.width, config.height)
    raise ValueError(f"scanner backend {config.backend!r} has no camera")


def open_scanner(config: ScannerConfig) -> CodeScanner:
    if config.backend == "serial":
        return SerialScanEngine(open_serial(config.source, config.baudrate, config.timeout_s))
    from drivers.scanner.stream import CameraScanner  # NumPy, OpenCV, zxing-cpp: cameras only

    return CameraScanner(
        lambda: open_camera(config),
        debouncer=Debouncer(config.debounce_s),
        frame_timeout_s=config.timeout_s,
    )


def open_printer(config: PrinterConfig) -> ReceiptPrinter:
    profile = profile_for(config)
    if config.backend == "sim":
        output = Path(config.sim_output) if config.sim_output else None
        return SimulatedPrinter(profile, output_dir=output)
    return EscposPrinter.open(config.backend, config.target, profile, config.timeout_s)


def open_dispenser(config: DispenserConfig) -> CardDispenser:
    if config.backend == "sim":
        return SerialDispenser(VirtualDispenserLink(), config.timeout_s)
    return SerialDispenser(
        open_serial(config.port, config.baudrate, config.timeout_s), config.timeout_s
    )


def open_panel(config: GpioConfig, pin_factory: Any = None) -> GpioPanel:
    """The GPIO panel; ``pin_factory`` overrides gpiozero's default (lgpio on a Pi 5)."""
    if config.backend == "sim":
        return SimulatedPanel(pin_factory)
    pins = config.model_dump(exclude={"backend"})
    return GpioPanel(pin_factory=pin_factory, **pins)


@dataclass
class Devices:
    """Every peripheral, opened; close them together."""

    scanner: CodeScanner
    printer: ReceiptPrinter
    dispenser: CardDispenser
    panel: GpioPanel

    def close(self) -> None:
        for device in (self.scanner, self.printer, self.dispenser, self.panel):
            device.close()


def open_devices(config: HardwareConfig) -> Devices:
    """Opens all devices; if one cannot be opened, those already open are closed again."""
    with contextlib.ExitStack() as stack:
        scanner = open_scanner(config.scanner)
        stack.callback(scanner.close)
        printer = open_printer(config.printer)
        stack.callback(printer.close)
        dispenser = open_dispenser(config.dispenser)
        stack.callback(dispenser.close)
        panel = open_panel(config.gpio)
        stack.pop_all()
    return Devices(scanner, printer, dispenser, panel)
