"""``kiosk backup``, ``kiosk update``, ``kiosk cleanup`` and ``kiosk provision``: keeping a
device in service for years.

These commands do not open the app context unless they need the database: a restore must
not hold the database it is about to replace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge.cli.common import emit, json_option, state
from edge.config import KioskConfig, default_data_dir, load_config
from edge.console import NUMBER

DEFAULT_INSTALL_ROOT = Path("/opt/member-kiosk")


def register(group: click.Group) -> None:
    group.add_command(backup_group)
    group.add_command(update_cmd)
    group.add_command(cleanup_cmd)
    group.add_command(provision_group)


def _data_dir() -> Path:
    return state().data_dir or default_data_dir()


def _config() -> KioskConfig:
    config, _ = load_config(state().config_path, _data_dir())
    return config


@click.group("backup")
def backup_group() -> None:
    """Ledger database backups: make one, list them, restore one."""


def _backup_row(info: Any) -> dict[str, Any]:
    return {
        "path": str(info.path),
        "sha256": info.sha256,
        "size": info.size,
        "created_at": info.created_at.isoformat(),
        "ledger_entries": info.ledger_entries,
        "members": info.members,
        "schema_revision": info.schema_revision,
        "delivered_at": info.delivered_at.isoformat() if info.delivered_at else None,
    }


@backup_group.command("create")
@click.option(
    "--dir",
    "backup_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where backups go (default: backups/ in the data directory).",
)
@click.option(
    "--keep-daily", default=14, show_default=True, type=NUMBER, help="Days of backups kept."
)
@json_option
def backup_create_cmd(backup_dir: Path | None, keep_daily: int) -> None:
    """A consistent copy of the ledger while the kiosk runs, rotated, kept on the device."""
    from edge.lifecycle.backup import BACKUP_DIR, create_backup, database_path

    data_dir = _data_dir()
    config = _config()
    info = create_backup(
        database_path(config, data_dir),
        backup_dir or data_dir / BACKUP_DIR,
        store_id=config.device.store_id,
        device_id=config.device.device_id,
        keep_daily=keep_daily,
    )
    emit(
        _backup_row(info),
        f"backup {info.path} ({info.size} bytes, {info.ledger_entries} ledger entries)\n"
        f"sha256 {info.sha256}",
    )


@backup_group.command("list")
@click.option("--dir", "backup_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
def backup_list_cmd(backup_dir: Path | None) -> None:
    """The backups kept on this device, oldest first."""
    from edge.lifecycle.backup import BACKUP_DIR, list_backups

    rows = [_backup_row(b) for b in list_backups(backup_dir or _data_dir() / BACKUP_DIR)]

    def human(_: Any) -> str:
        lines = [
            f"{r['created_at']:<33} {r['ledger_entries']:>9} entries  "
            f"{'at HQ' if r['delivered_at'] else 'not at HQ yet':<13}  {r['path']}"
            for r in rows
        ]
        return "\n".join(lines) or "no backups"

    emit(rows, human)


@backup_group.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sha256", "expected", help="A SHA-256 the backup must also have (from HQ, say).")
@click.option(
    "--lock-timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for commands and work in progress to finish.",
)
@json_option
def backup_restore_cmd(backup: Path, expected: str | None, lock_timeout: float) -> None:
    """Verify BACKUP (this device's, with its .json manifest beside it) and make it the live
    ledger (stop member-kiosk and its agent first)."""
    from edge.lifecycle.restore import restore_backup

    result = restore_backup(
        backup, _data_dir(), _config(), expected_sha256=expected, lock_timeout=lock_timeout
    )
    lines = [
        f"restored {result.database} from {backup} (device {result.device_id}, "
        f"store {result.store_id})",
        f"{result.ledger_entries} ledger entries, {result.members} members, "
        f"{result.audit_records} audit records: verified",
        *(f"kept the replaced file {p}" for p in result.replaced),
        *(f"warning: {w}" for w in result.warnings),
    ]
    emit(result, "\n".join(lines))


def _update_key(data_dir: Path, path: Path | None) -> Any:
    from edge.lifecycle.update import UPDATE_KEY_FILE
    from edge.security.keys import load_public_key

    return load_public_key(path or data_dir / UPDATE_KEY_FILE)


@click.command("update")
@click.argument(
    "bundle", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--inbox", is_flag=True, help="Apply every bundle waiting in updates/inbox.")
@click.option(
    "--install-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_INSTALL_ROOT,
    show_default=True,
    help="Where versions are installed and `current` points.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="HQ's update key (default: keys/hq-update.pub in the data directory).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Stop the kiosk services for the switch and start them after it (systemctl).",
)
@click.option("--lock-timeout", default=600.0, show_default=True, help="Seconds to wait for work.")
@click.option("--health-timeout", default=120.0, show_default=True, help="Seconds for the check.")
@click.option("--python", "python", help="Interpreter for new versions (default: the system's).")
@json_option
def update_cmd(
    bundle: Path | None,
    inbox: bool,
    install_root: Path,
    public_key: Path | None,
    restart: bool,
    lock_timeout: float,
    health_timeout: float,
    python: str | None,
) -> None:
    """Install a signed update BUNDLE; keep it only if the new version's doctor passes."""
    from edge.lifecycle.update import SERVICES, apply_update, drain_inbox

    if (bundle is None) == (not inbox):
        raise click.UsageError("name one BUNDLE or pass --inbox")
    data_dir = _data_dir()
    options: dict[str, Any] = {
        "install_root": install_root,
        "public_key": _update_key(data_dir, public_key),
        "config_path": state().config_path,
        "python": python,
        "services": SERVICES if restart else (),
        "health_timeout": health_timeout,
        "lock_timeout": lock_timeout,
    }
    if bundle is not None:
        outcomes: list[tuple[Path, Any]] = [
            (bundle, apply_update(bundle, data_dir=data_dir, **options))
        ]
    else:
        outcomes = drain_inbox(data_dir, **options)
    rows = []
    failed = False
    for path, outcome in outcomes:
        if isinstance(outcome, str):
            rows.append({"bundle": path.name, "status": "refused", "problems": [outcome]})
            failed = True
        else:
            rows.append({"bundle": path.name, **_plain_result(outcome)})
            failed = failed or outcome.status == "rolled_back"

    def human(_: Any) -> str:
        lines = []
        for r in rows:
            if r["status"] == "already_current":
                lines.append(f"{r['bundle']}: {r['version']} is already the current version")
                continue
            if r["status"] == "refused":
                lines.append(f"{r['bundle']}: refused: {'; '.join(r['problems'])}")
                continue
            version = f" {r['version']}" if "version" in r else ""
            lines.append(f"{r['bundle']}: {r['status']}{version}")
            lines += [f"  problem: {p}" for p in r.get("problems", [])]
        return "\n".join(lines) or "no update waiting"

    emit(rows if inbox else rows[0], human)
    if failed:
        raise click.exceptions.Exit(1)


def _plain_result(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(result)


@click.command("cleanup")
@click.option(
    "--install-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_INSTALL_ROOT,
    show_default=True,
)
@click.option(
    "--keep-daily", default=14, show_default=True, type=NUMBER, help="Days of backups kept."
)
@json_option
def cleanup_cmd(install_root: Path, keep_daily: int) -> None:
    """Remove versions other than current and previous, and backups past their rotation."""
    from edge.lifecycle.backup import BACKUP_DIR, rotate
    from edge.lifecycle.update import prune_versions

    versions = prune_versions(install_root)
    backups = rotate(_data_dir() / BACKUP_DIR, keep_daily)
    result = {"versions_removed": versions, "backups_removed": backups}
    emit(result, f"removed {len(versions)} old versions and {len(backups)} old backups")


@click.group("provision")
def provision_group() -> None:
    """Pair this device with HQ, enrol it from HQ's bundle, check it before service."""


def _config_path() -> Path:
    return load_config(state().config_path, _data_dir())[1]


@provision_group.command("pairing-slip")
@click.option("--serial", help="Device serial (default: the board's).")
@click.option("--no-print", is_flag=True, help="Show the pairing code without printing.")
@click.option("--actor", default="technician", show_default=True, help="Who, for the audit.")
@json_option
def pairing_slip_cmd(serial: str | None, no_print: bool, actor: str) -> None:
    """A one-time pairing code and this device's certificate request, on the receipt printer."""
    from datetime import datetime

    from edge.provisioning.pairing import pairing_slip, start_pairing

    data_dir = _data_dir()
    request = start_pairing(data_dir, serial=serial, actor=actor, config_path=_config_path())
    printed = False
    if not no_print:
        from drivers.factory import open_printer

        printer = open_printer(_config().hardware.printer)
        try:
            printer.print_receipt(
                pairing_slip(request, datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"))
            )
            printed = True
        finally:
            printer.close()
    emit(
        {
            "serial": request.serial,
            "pairing_code": request.code,
            "qr": request.qr_text,
            "expires_at": request.expires_at,
            "printed": printed,
        },
        f"序列号 serial {request.serial}\n配对码 pairing code {request.code}\nQR {request.qr_text}",
    )


def _enrol_key(path: Path | None) -> Any:
    """HQ's enrolment public key: ``--hq-key``, else keys/hq-enrol.pub in the data directory,
    else the one the image installed (/etc/member-kiosk/hq-enrol.pub)."""
    from edge.domain.errors import ConfigError
    from edge.provisioning.enrolment import IMAGE_ENROL_KEY
    from edge.security.keys import load_public_key

    if path is None:
        local = _data_dir() / "keys" / "hq-enrol.pub"
        path = local if local.exists() else IMAGE_ENROL_KEY
        if not path.exists():
            raise ConfigError(
                "HQ's enrolment key is not installed (this image was built without it): "
                "give it with --hq-key FILE",
                code="enrol_key_missing",
            )
    return load_public_key(path)


def _read_qr_image(image: Path) -> bytes:
    from drivers.scanner import CodeDecoder
    from edge.cli.hardware_commands import _load_image
    from edge.domain.errors import InvalidInput
    from edge.provisioning.bundle import bundle_from_qr, looks_like_bundle_qr

    for code in CodeDecoder().decode(_load_image(image)):
        if looks_like_bundle_qr(code.text):
            return bundle_from_qr(code.text)
    raise InvalidInput(f"{image}: no enrolment QR code found", code="no_qr")


def _read_qr_camera(timeout_s: float, sim: bool, sim_images: tuple[Path, ...]) -> bytes:
    """The first enrolment QR code the configured scanner sees (other codes are passed over).

    With ``sim`` a simulated camera plays ``sim_images`` (default: the configured images).
    """
    import time

    from drivers.config import ScannerConfig
    from drivers.errors import DeviceError
    from drivers.factory import open_scanner
    from edge.domain.errors import InvalidInput
    from edge.provisioning.bundle import bundle_from_qr, looks_like_bundle_qr

    config = _config().hardware.scanner
    if sim:
        images = [str(p) for p in sim_images] or config.images
        config = ScannerConfig.model_validate(
            {**config.model_dump(), "backend": "sim", "images": images}
        )
    try:
        scanner = open_scanner(config)
    except DeviceError as exc:
        raise InvalidInput(f"scanner: {exc.health.reason}", code="scanner") from None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                code = scanner.read_code(min(left, 1.0))
            except DeviceError as exc:
                raise InvalidInput(f"scanner: {exc.health.reason}", code="scanner") from None
            if code is None:
                continue
            if looks_like_bundle_qr(code.text):
                return bundle_from_qr(code.text)
            seen.append(code.text[:16])
    finally:
        scanner.close()
    other = f" (saw only other codes: {', '.join(seen[:3])})" if seen else ""
    raise InvalidInput(
        f"the camera saw no enrolment QR code in {timeout_s:g} s{other}", code="no_qr"
    )


def _run_checks(data_dir: Path) -> Any:
    from edge.app import AppContext
    from edge.provisioning.checks import (
        ProvisionReport,
        check_broker_login,
        check_connectivity,
        check_peripherals,
    )

    app = AppContext.open(data_dir, config_path=state().config_path)
    try:
        lines = [check_connectivity(app.config), check_broker_login(app.config, data_dir)]
        lines += check_peripherals(app.config, app.check_database())
    finally:
        app.close()
    return ProvisionReport(lines)


@click.command("enrol")
@click.argument(
    "bundle", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--qr-image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A photo of HQ's enrolment QR code instead of a bundle file.",
)
@click.option(
    "--camera", is_flag=True, help="Read HQ's enrolment QR code with this kiosk's camera."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds --camera waits for the code.",
)
@click.option("--sim", is_flag=True, help="--camera on a simulated camera (development machine).")
@click.option(
    "--sim-image",
    "sim_images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An image the simulated camera shows (repeatable).",
)
@click.option(
    "--hq-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KIOSK_HQ_ENROL_KEY",
    help="HQ's enrolment public key (default: keys/hq-enrol.pub, else the image's).",
)
@click.option("--reprovision", is_flag=True, help="Give an enrolled device a new identity.")
@click.option("--actor", default="technician", show_default=True, help="Who, for the audit.")
@click.option("--skip-checks", is_flag=True, help="Enrol only; run `provision check` later.")
@json_option
def provision_enrol_cmd(
    bundle: Path | None,
    qr_image: Path | None,
    camera: bool,
    timeout_s: float,
    sim: bool,
    sim_images: tuple[Path, ...],
    hq_key: Path | None,
    reprovision: bool,
    actor: str,
    skip_checks: bool,
) -> None:
    """Enrol from HQ's signed BUNDLE (or its QR code), then check network, broker login and
    every peripheral."""
    from edge.provisioning.bundle import verify_enrolment
    from edge.provisioning.enrolment import LOOKUP_FROM_BUNDLE, apply_enrolment

    if sum((bundle is not None, qr_image is not None, camera)) != 1:
        raise click.UsageError("give a BUNDLE file, --qr-image or --camera")
    if (sim or sim_images) and not camera:
        raise click.UsageError("--sim and --sim-image go with --camera")
    public_key = _enrol_key(hq_key)
    if bundle is not None:
        raw = bundle.read_bytes()
    elif qr_image is not None:
        raw = _read_qr_image(qr_image)
    else:
        raw = _read_qr_camera(timeout_s, sim, sim_images)
    enrolment = verify_enrolment(raw, public_key)
    data_dir = _data_dir()
    applied = apply_enrolment(
        data_dir, enrolment, actor=actor, reprovision=reprovision, config_path=_config_path()
    )
    head = f"已登记 enrolled: store {applied.store_id}, device {applied.device_id}" + (
        f" (was {applied.previous_device_id})" if applied.previous_device_id else ""
    )
    head += f"\n查询密钥 lookup key {applied.lookup_key_id}"
    if applied.members_rehashed:
        head += f" ({applied.members_rehashed} members re-indexed)"
    if applied.lookup_key_source != LOOKUP_FROM_BUNDLE:
        head += (
            "\n注意 note: lookup.key comes from a systemd credential and wins over the chain's"
            " key in the bundle; it must hold the chain's key or phone lookup fails across stores"
        )
    if skip_checks:
        emit({"enrolled": applied, "in_service": None}, head)
        return
    report = _run_checks(data_dir)
    emit(
        {"enrolled": applied, "in_service": report.in_service, "checks": report.lines},
        f"{head}\n{report.render()}",
    )
    if not report.in_service:
        raise click.exceptions.Exit(1)


provision_group.add_command(provision_enrol_cmd, "enrol")
provision_group.add_command(provision_enrol_cmd, "apply")  # the earlier name


@provision_group.command("check")
@json_option
def provision_check_cmd() -> None:
    """Network, broker login with the device certificate, every peripheral, the database."""
    report = _run_checks(_data_dir())
    emit({"in_service": report.in_service, "checks": report.lines}, report.render())
    if not report.in_service:
        raise click.exceptions.Exit(1)


@provision_group.command("audit")
@json_option
def provision_audit_cmd() -> None:
    """Every pairing and enrolment of this device, from its audit chain (an altered or cut
    chain is reported)."""
    from edge.provisioning.enrolment import read_audit

    records = read_audit(_data_dir(), _config_path())

    def line(r: dict[str, Any]) -> str:
        what = f"{r.get('store_id', '')}/{r.get('device_id', '')}" if "device_id" in r else ""
        return f"{r['at']} {r['action']:<18} {what or r['subject']} by {r['actor']}"

    emit(records, lambda rs: "\n".join(line(r) for r in rs) or "never provisioned")
