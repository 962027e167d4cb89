"""``kiosk scan``, ``kiosk printer test`` and ``kiosk doctor``: the technician's hardware tools.

OpenCV, zxing-cpp, escpos and gpiozero are imported inside the commands so that every other
command starts without loading them.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from drivers.health import HealthState
from edge.app import AppContext
from edge.cli.common import emit, json_option, state
from edge.domain.errors import DiskFull, InvalidInput

if TYPE_CHECKING:
    from edge.config import KioskUiConfig


def register(group: click.Group) -> None:
    group.add_command(scan_cmd)
    group.add_command(printer_group)
    group.add_command(doctor_cmd)


def _load_image(path: Path) -> Any:
    import cv2
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    image = cv2.imread(str(path))
    if image is not None:
        return image
    try:  # OpenCV reads no GIF
        with Image.open(path) as pil:
            return cv2.cvtColor(np.asarray(pil.convert("RGB")), cv2.COLOR_RGB2BGR)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInput(f"{path}: not a readable image ({exc})") from None


@click.command("scan")
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@json_option
def scan_cmd(images: tuple[Path, ...]) -> None:
    """Decode member-center codes (QR, Code 128, EAN-13) in IMAGE files."""
    from drivers.scanner import CodeDecoder

    decoder = CodeDecoder()
    for path in images:
        image = _load_image(path)
        start = time.perf_counter()
        scanned = decoder.scan(image)
        ms = round((time.perf_counter() - start) * 1000, 2)
        codes = scanned.codes
        # Other codes seen in the frame help a technician aim the camera; they are never scans.
        others = [located.code for located in scanned.secondary]
        result = {
            "path": str(path),
            "codes": [{"format": c.format.value, "text": c.text} for c in codes],
            "secondary": [{"format": c.format.value, "text": c.text} for c in others],
            "ms": ms,
        }
        found = "; ".join(f"{c.format.value} {c.text!r}" for c in codes) or "no code"
        also = f" (also in view: {'; '.join(repr(c.text) for c in others)})" if others else ""
        emit(result, f"{path}: {found}{also} ({ms} ms)")


@click.group("printer")
def printer_group() -> None:
    """The receipt printer."""


@printer_group.command("test")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the ESC/POS byte stream to FILE instead of printing.",
)
@json_option
def printer_test_cmd(output: Path | None) -> None:
    """Print the technician test page (store, device, 会员中心, QR, barcode, status, cut)."""
    from drivers.errors import DeviceError
    from drivers.factory import open_printer, profile_for
    from drivers.printer import encode_receipt, receipts
    from edge.station.slips import CENTER_NAME

    app = state().app
    cfg = app.config.hardware.printer
    profile = profile_for(cfg)
    header = receipts.ReceiptHeader(
        store_name=f"门店 {app.config.device.store_id}",
        store_id=app.config.device.store_id,
        device_id=app.config.device.device_id,
        printed_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
        banner=CENTER_NAME,
    )

    def page(status_lines: tuple[str, ...]) -> Any:
        name = f"{cfg.backend}:{cfg.target or '-'}"
        info = receipts.TechnicianTestPage(header, name, cfg.paper_mm, cfg.encoding, status_lines)
        return receipts.technician_test_page(info, profile.columns)

    if output is not None:
        data = encode_receipt(page(("status: not queried (written to a file)",)), profile)
        output.write_bytes(data)
        emit({"output": str(output), "bytes": len(data)}, f"wrote {len(data)} bytes to {output}")
        return
    try:
        printer = open_printer(cfg)
    except DeviceError as exc:
        raise InvalidInput(f"printer: {exc.health.reason}") from None
    try:
        status = printer.status()
        health = status.health()
        lines = (
            f"online: {status.online}",
            f"paper: {status.paper}",
            f"cover open: {status.cover_open}",
            f"health: {health.state.value} {health.reason}".rstrip(),
        )
        printer.print_receipt(page(lines))
    except DeviceError as exc:
        raise InvalidInput(f"printer: {exc.health.reason}") from None
    finally:
        printer.close()
    emit(
        {"printed": True, "health": health.state.value, "reason": health.reason},
        f"test page printed; printer {health.state.value} {health.reason}".rstrip(),
    )


@click.command("doctor")
@click.option("--sim", is_flag=True, help="Use simulated hardware regardless of the configuration.")
@json_option
def doctor_cmd(sim: bool) -> None:
    """Check every configured device, the database and free space; exits 1 when one has
    failed."""
    from drivers.config import HardwareConfig
    from drivers.selftest import check_hardware
    from edge.config import default_data_dir, load_config

    cli = state()
    try:
        app: AppContext | None = cli.app
    except DiskFull:  # the database cannot even be opened: still check the rest
        app, unopened = None, "the disk is full: the database cannot be opened"
    data_dir = app.data_dir if app else cli.data_dir or default_data_dir()
    config = app.config if app else load_config(cli.config_path, data_dir)[0]
    hardware = HardwareConfig() if sim else config.hardware
    rows = [
        {
            "device": r.device,
            "backend": r.backend,
            "state": r.health.state.value,
            "code": r.health.code,
            "reason": r.health.reason,
            "detail": r.detail,
            "ms": round(r.ms, 1),
        }
        for r in check_hardware(hardware)
    ]
    start = time.perf_counter()
    db_ok, db_detail = app.check_database() if app else (False, unopened)
    rows.append(
        {
            "device": "database",
            "backend": "sqlite",
            "state": HealthState.OK.value if db_ok else HealthState.FAILED.value,
            "code": "" if db_ok else "database",
            "reason": "" if db_ok else db_detail,
            "detail": db_detail if db_ok else "",
            "ms": round((time.perf_counter() - start) * 1000, 1),
        }
    )
    rows.append(_storage_row(data_dir))
    rows.append(_display_row(config.ui, sim))
    failed = any(r["state"] == HealthState.FAILED.value for r in rows)
    emit({"ok": not failed, "checks": rows}, lambda _: _table(rows, failed))
    if failed:
        raise click.exceptions.Exit(1)


def _display_row(ui: KioskUiConfig, sim: bool) -> dict[str, Any]:
    """The touchscreen as the app will lay it out: the size (the connected display's, or the
    window's), the rotation, the panel's size in mm and so the smallest touch target, and
    the touch input. WARN when the touch device is missing (the panel may be plugged in
    after an update's check), or when nothing says how large the panel is (targets are then
    sized for 96 dpi)."""
    from edge.station.displays import connected_size, known_panel, min_target_px

    start = time.perf_counter()
    found = connected_size() if ui.fullscreen else None
    if found is not None:
        output, (width, height) = found
        where = f"{output} {width}x{height}"
    else:
        width, height = ui.width, ui.height
        where = (
            f"{width}x{height} {'full screen (no display found)' if ui.fullscreen else 'window'}"
        )
    if ui.rotation in (90, 270):
        width, height = height, width  # what the app lays out
    mm = (ui.panel_width_mm, ui.panel_height_mm)
    panel = known_panel(width, height)
    if mm[0] > 0:
        size = f"panel {mm[0]:g}x{mm[1]:g} mm (configured)"
    elif panel is not None:
        size = f"panel {panel.width_mm:g}x{panel.height_mm:g} mm ({panel.name})"
    else:
        size = "panel size unknown: set [ui] panel_width_mm and panel_height_mm"
    touch = ui.touch_provider if sim or ui.touch_provider == "mouse" else (
        f"{ui.touch_provider} {ui.touch_device or '(no touch_device)'}"
        f"{f' rotation {ui.touch_rotation}' if ui.touch_rotation else ''}"
        f"{' invert_x' if ui.touch_invert_x else ''}{' invert_y' if ui.touch_invert_y else ''}"
    )  # fmt: skip
    target = min_target_px(width, height, *mm)
    detail = (
        f"{where}, laid out {width}x{height} {'portrait' if height > width else 'landscape'}, "
        f"rotation {ui.rotation}, {size}, touch targets >= {target:.0f} px, touch {touch}"
    )
    raw = ui.touch_provider in ("mtdev", "hidinput") and not sim
    state, code, reason = HealthState.OK, "", ""
    if raw and not (ui.touch_device and Path(ui.touch_device).exists()):
        state, code = HealthState.DEGRADED, "touch_missing"
        reason = f"touch device {ui.touch_device or '(none configured)'} not found"
    elif mm[0] <= 0 and panel is None:
        state, code, reason = HealthState.DEGRADED, "panel_unknown", "panel size unknown"
    return {
        "device": "display",
        "backend": "sdl2",
        "state": state.value,
        "code": code,
        "reason": reason,
        "detail": detail,
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }


def _storage_row(data_dir: Path) -> dict[str, Any]:
    """Free space where the ledger lives: WARN when low, FAIL when too low to run on (the
    thresholds telemetry reports by, :func:`edge.sync.telemetry.space_state`)."""
    import shutil

    from edge.sync.telemetry import describe_space, space_state

    start = time.perf_counter()
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        free = total = 0
        state, code, reason, detail = HealthState.FAILED, "unreadable", str(exc), ""
    else:
        free, total = usage.free, usage.total
        detail = f"{describe_space(free, total)} in {data_dir}"
        state, code, reason = {
            "ok": (HealthState.OK, "", ""),
            "low": (HealthState.DEGRADED, "low_space", "free space is low"),
            "full": (HealthState.FAILED, "disk_full", "the disk is nearly full"),
        }[space_state(free, total)]
    return {
        "device": "storage",
        "backend": "disk",
        "state": state.value,
        "code": code,
        "reason": reason,
        "detail": detail,
        "free_bytes": free,
        "total_bytes": total,
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }


def _table(rows: list[dict[str, Any]], failed: bool) -> str:
    marks = {HealthState.OK: "OK  ", HealthState.DEGRADED: "WARN", HealthState.FAILED: "FAIL"}
    lines = [f"{'':4}  {'device':<10} {'backend':<9} {'ms':>7}  detail"]
    for r in rows:
        text = r["reason"] or r["detail"]
        if r["reason"] and r["detail"]:
            text = f"{r['reason']} ({r['detail']})"
        lines.append(
            f"{marks[r['state']]}  {r['device']:<10} {r['backend']:<9} {r['ms']:>7.1f}  {text}"
        )
    lines.append("result: FAILED" if failed else "result: all devices usable")
    return "\n".join(lines)
