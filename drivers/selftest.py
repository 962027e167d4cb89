"""The technician's self-test: open each configured device, exercise it briefly, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.config import HardwareConfig
from drivers.errors import DeviceError
from drivers.factory import open_camera, open_dispenser, open_panel, open_printer
from drivers.health import Health
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


def check_hardware(config: HardwareConfig) -> list[CheckResult]:
    """Checks scanner, printer, dispenser and GPIO panel, each bounded by its timeout."""
    return [
        _timed("scanner", config.scanner.backend, lambda: _scanner(config)),
        _timed("printer", config.printer.backend, lambda: _printer(config)),
        _timed("dispenser", config.dispenser.backend, lambda: _dispenser(config)),
        _timed("gpio", config.gpio.backend, lambda: _gpio(config)),
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


def _printer(config: HardwareConfig) -> tuple[Health, str]:
    printer = open_printer(config.printer)
    try:
        status = printer.status()
    finally:
        printer.close()
    detail = f"online={status.online} paper={status.paper} cover_open={status.cover_open}"
    return status.health(), detail


def _dispenser(config: HardwareConfig) -> tuple[Health, str]:
    dispenser = open_dispenser(config.dispenser)
    try:
        status = dispenser.status()
    finally:
        dispenser.close()
    warning = stable_name_warning(config.dispenser.port)
    health = status.health()
    if health.is_ok and warning:
        health = Health.degraded("unstable_name", warning)
    flags = f"at_mouth={status.card_at_mouth} low={status.low} empty={status.empty}"
    return health, f"{flags} jam={status.jam}"


def _gpio(config: HardwareConfig) -> tuple[Health, str]:
    panel = open_panel(config.gpio)
    try:
        return panel.health(), f"door_open={panel.door_open} paper_low={panel.paper_low}"
    finally:
        panel.close()
