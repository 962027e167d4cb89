"""Builds every device from :class:`HardwareConfig`: the one place that maps config to classes.

A simulated device has a far side, where a test, the demo or a developer acts as the
customer and injects faults (a jam, paper out, a code held up). The factory hands those out in
:class:`Simulators` instead of hiding them inside the devices it returns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.config import DispenserConfig, GpioConfig, HardwareConfig, PrinterConfig, ScannerConfig
from drivers.dispenser import CardDispenser, SerialDispenser, VirtualDispenserLink
from drivers.gpio import GpioPanel, SimulatedPanel
from drivers.printer import EscposPrinter, PrinterProfile, ReceiptPrinter, SimulatedPrinter
from drivers.scanner import CodeScanner, Debouncer, SerialScanEngine, VirtualScanEngineLink
from drivers.scanner.interface import Camera
from drivers.serialio import open_serial


@dataclass
class Simulators:
    """The far sides of the simulated devices; ``None`` where the device is real.

    Example:
        >>> devices = open_devices(HardwareConfig(dispenser={"backend": "sim"}))
        >>> devices.sim.dispenser.jam_next = True  # the next card jams
    """

    scan_engine: VirtualScanEngineLink | None = None
    printer: SimulatedPrinter | None = None
    dispenser: VirtualDispenserLink | None = None
    panel: SimulatedPanel | None = None

    @property
    def complete(self) -> bool:
        """Every device is simulated, and codes are presented as text."""
        return None not in (self.scan_engine, self.printer, self.dispenser, self.panel)


def profile_for(config: PrinterConfig) -> PrinterProfile:
    name = f"{config.encoding}-{config.paper_mm}"
    return PrinterProfile(name, config.paper_mm, config.encoding, config.kanji_mode)


def open_camera(config: ScannerConfig) -> Camera:
    """The configured camera (not for the scan-engine backends, ``serial`` and ``sim-serial``)."""
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


def open_scanner(config: ScannerConfig, sim: Simulators | None = None) -> CodeScanner:
    """The configured scanner; a ``sim-serial`` engine's link goes into ``sim``."""
    if config.backend == "serial":
        return SerialScanEngine(open_serial(config.source, config.baudrate, config.timeout_s))
    if config.backend == "sim-serial":
        link = VirtualScanEngineLink()
        if sim is not None:
            sim.scan_engine = link
        return SerialScanEngine(link)
    from drivers.scanner.stream import CameraScanner  # NumPy, OpenCV, zxing-cpp: cameras only

    return CameraScanner(
        lambda: open_camera(config),
        debouncer=Debouncer(config.debounce_s),
        frame_timeout_s=config.timeout_s,
    )


def open_printer(config: PrinterConfig, sim: Simulators | None = None) -> ReceiptPrinter:
    """The configured printer; a simulated one is also put into ``sim``."""
    profile = profile_for(config)
    if config.backend == "sim":
        output = Path(config.sim_output) if config.sim_output else None
        printer = SimulatedPrinter(profile, output_dir=output)
        if sim is not None:
            sim.printer = printer
        return printer
    return EscposPrinter.open(config.backend, config.target, profile, config.timeout_s)


def open_dispenser(config: DispenserConfig, sim: Simulators | None = None) -> CardDispenser:
    """The configured dispenser; a simulated one's serial link goes into ``sim``."""
    if config.backend == "sim":
        link = VirtualDispenserLink()
        if sim is not None:
            sim.dispenser = link
        return SerialDispenser(link, config.timeout_s)
    return SerialDispenser(
        open_serial(config.port, config.baudrate, config.timeout_s), config.timeout_s
    )


def open_panel(
    config: GpioConfig, pin_factory: Any = None, sim: Simulators | None = None
) -> GpioPanel:
    """The GPIO panel; ``pin_factory`` overrides gpiozero's default (lgpio on a Pi 5)."""
    if config.backend == "sim":
        panel = SimulatedPanel(pin_factory)
        if sim is not None:
            sim.panel = panel
        return panel
    pins = config.model_dump(exclude={"backend"})
    return GpioPanel(pin_factory=pin_factory, **pins)


@dataclass
class Devices:
    """Every peripheral, opened; close them together. ``sim`` reaches the simulated ones."""

    scanner: CodeScanner
    printer: ReceiptPrinter
    dispenser: CardDispenser
    panel: GpioPanel
    sim: Simulators = field(default_factory=Simulators)

    def close(self) -> None:
        for device in (self.scanner, self.printer, self.dispenser, self.panel):
            device.close()


def open_devices(config: HardwareConfig) -> Devices:
    """Opens all devices; if one cannot be opened, those already open are closed again."""
    sim = Simulators()
    with contextlib.ExitStack() as stack:
        scanner = open_scanner(config.scanner, sim)
        stack.callback(scanner.close)
        printer = open_printer(config.printer, sim)
        stack.callback(printer.close)
        dispenser = open_dispenser(config.dispenser, sim)
        stack.callback(dispenser.close)
        panel = open_panel(config.gpio, sim=sim)
        stack.pop_all()
    return Devices(scanner, printer, dispenser, panel, sim)
