"""The technician's self-test: exercise each device briefly and report.

``kiosk doctor`` opens the configured devices itself. A running app already holds them (its
serial ports are opened exclusively, a camera has one reader), so it passes its open
:class:`~drivers.factory.Devices` in, and they are checked through the handles it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.config import HardwareConfig
from drivers.dispenser import DispenserStatus
from drivers.errors import DeviceError
from drivers.factory import Devices, open_camera, open_dispenser, open_panel, open_printer
from drivers.gpio import GpioPanel
from drivers.health import Health
from drivers.printer import PrinterStatus
from drivers.serialio import open_serial, stable_name_warning


@dataclass(frozen=True)
class CheckResult:
    """One line of the self-test table."""

    device: str
    backend: str
    health: Health
    detail: str
    ms: float


def _timed(device: str, backend: str, check: Callable[[], tuple[Health, str]]) -> CheckResult:
    start = time.perf_counter()
    try:
        health, detail = check()
    except DeviceError as exc:
        health, detail = exc.health, ""
    except Exception as exc:  # a self-test reports every failure, whatever its type
        health, detail = Health.failed("error", f"{type(exc).__name__}: {exc}"), ""
    return CheckResult(device, backend, health, detail, (time.perf_counter() - start) * 1000)


def check_hardware(config: HardwareConfig, devices: Devices | None = None) -> list[CheckResult]:
    """Checks scanner, printer, dispenser and GPIO panel, each bounded by its timeout.

    Without ``devices`` each device is opened, checked and closed again; with them (already
    open, as a running app holds them) nothing is opened or closed.
    """
    if devices is not None:
        return _check_open(config, devices)
    return [
        _timed("scanner", config.scanner.backend, lambda: _scanner(config)),
        _timed("printer", config.printer.backend, lambda: _printer(config)),
        _timed("dispenser", config.dispenser.backend, lambda: _dispenser(config)),
        _timed("gpio", config.gpio.backend, lambda: _gpio(config)),
    ]


def _check_open(config: HardwareConfig, devices: Devices) -> list[CheckResult]:
    def scanner() -> tuple[Health, str]:
        # a live camera is read by its own threads; its health is what they last saw
        return devices.scanner.health(), config.scanner.source

    def printer() -> tuple[Health, str]:
        status = devices.printer.status()
        return status.health(), _printer_detail(status)

    def dispenser() -> tuple[Health, str]:
        return _dispenser_health(config, devices.dispenser.status())

    def gpio() -> tuple[Health, str]:
        devices.panel.beep(0.05)  # the technician hears the buzzer
        return devices.panel.health(), _panel_detail(devices.panel)

    return [
        _timed("scanner", config.scanner.backend, scanner),
        _timed("printer", config.printer.backend, printer),
        _timed("dispenser", config.dispenser.backend, dispenser),
        _timed("gpio", config.gpio.backend, gpio),
    ]


def _scanner(config: HardwareConfig) -> tuple[Health, str]:
    cfg = config.scanner
    if cfg.backend == "serial":
        link = open_serial(cfg.source, cfg.baudrate, cfg.timeout_s)
        link.close()
        warning = stable_name_warning(cfg.source)
        return (Health.degraded("unstable_name", warning) if warning else Health.ok()), cfg.source
    from drivers.scanner.decode import CodeDecoder  # the image libraries, cameras only

    camera = open_camera(cfg)
    try:
        frame = camera.read_frame(cfg.timeout_s)
        start = time.perf_counter()
        codes = CodeDecoder().decode(frame)
        ms = (time.perf_counter() - start) * 1000
    finally:
        camera.close()
    height, width = frame.shape[:2]
    seen = ", ".join(f"{c.format}:{c.text[:20]}" for c in codes) or "no code in view"
    return camera.health(), f"{width}x{height} frame, decode {ms:.1f} ms, {seen}"


def _printer_detail(status: PrinterStatus) -> str:
    return f"online={status.online} paper={status.paper} cover_open={status.cover_open}"


def _printer(config: HardwareConfig) -> tuple[Health, str]:
    printer = open_printer(config.printer)
    try:
        status = printer.status()
    finally:
        printer.close()
    return status.health(), _printer_detail(status)


def _dispenser_health(config: HardwareConfig, status: DispenserStatus) -> tuple[Health, str]:
    health = status.health()
    warning = stable_name_warning(config.dispenser.port)
    if health.is_ok and warning:
        health = Health.degraded("unstable_name", warning)
    flags = f"at_mouth={status.card_at_mouth} low={status.low} empty={status.empty}"
    return health, f"{flags} jam={status.jam}"


def _dispenser(config: HardwareConfig) -> tuple[Health, str]:
    dispenser = open_dispenser(config.dispenser)
    try:
        status = dispenser.status()
    finally:
        dispenser.close()
    return _dispenser_health(config, status)


def _panel_detail(panel: GpioPanel) -> str:
    return f"door_open={panel.door_open} paper_low={panel.paper_low}"


def _gpio(config: HardwareConfig) -> tuple[Health, str]:
    panel = open_panel(config.gpio)
    try:
        return panel.health(), _panel_detail(panel)
    finally:
        panel.close()
