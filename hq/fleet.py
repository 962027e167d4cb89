"""The fleet monitor: every device's status and health, and the alerts HQ staff act on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.protocol import DeviceStatus, Telemetry
from hq.backups import BackupStore
from hq.device_coupons import record_key
from hq.ledger import clear_alert, raise_alert
from hq.models import Alert, FleetDevice

# Peripheral health codes (drivers.health) that page HQ staff, and the alert they raise.
CODE_ALERTS = {
    "paper_out": "printer_out_of_paper",
    "door_open": "door_opened",
    "empty": "dispenser_empty",
    "jam": "device_jammed",
}


@dataclass(frozen=True)
class DiskLow:
    """When a device's free space (where its ledger lives) raises ``disk_low``: below the
    larger of ``percent`` of the disk and ``mb`` megabytes (10**6 bytes)."""

    percent: float = 10.0
    mb: int = 200

    def threshold(self, total_bytes: int) -> int:
        return max(int(total_bytes * self.percent / 100), self.mb * 1000 * 1000)


def _size(n: int) -> str:
    return f"{n / 10**9:.1f} GB" if n >= 10**9 else f"{n / 10**6:.0f} MB"


def _device(session: Session, device_id: str) -> FleetDevice:
    device = session.get(FleetDevice, device_id)
    if device is None:
        device = FleetDevice(device_id=device_id, telemetry="{}", faults="[]")
        session.add(device)
    return device


def apply_status(session: Session, status: DeviceStatus, now: datetime) -> None:
    device = _device(session, status.device_id)
    device.store_id = status.store_id
    device.role = status.role
    device.version = status.version
    if device.state != status.state:
        device.state = status.state
        device.state_since = status.at
    if status.state == "online":
        device.last_seen = now
        clear_alert(session, "device_offline", status.device_id, now)


def apply_telemetry(
    session: Session, sample: Telemetry, now: datetime, disk_low: DiskLow = DiskLow()
) -> None:
    device = _device(session, sample.device_id)
    device.store_id = sample.store_id
    device.version = sample.version
    device.last_seen = now
    if device.state != "online":
        # A device sending telemetry is connected, whether or not HQ heard its status (a
        # shared subscription is not handed the retained status when a worker starts).
        device.state, device.state_since = "online", now
        clear_alert(session, "device_offline", sample.device_id, now)
    device.outbox_depth = sample.outbox_depth
    device.last_sync_at = sample.last_sync_at
    device.telemetry = sample.model_dump_json()
    device.faults = json.dumps(sample.faults)
    if sample.signing_key is not None:
        record_key(session, sample.device_id, sample.signing_key, now)
    for name, health in sample.devices.items():
        subject = f"{sample.device_id}:{name}"
        kind = CODE_ALERTS.get(health.code)
        if kind is not None and health.state != "ok":
            raise_alert(
                session,
                kind,
                subject,
                health.reason or health.code,
                now,
                sample.store_id,
                sample.device_id,
            )
        elif health.state == "ok":
            for alert_kind in CODE_ALERTS.values():
                clear_alert(session, alert_kind, subject, now)
    if sample.throttling is not None and sample.throttling.undervoltage_now:
        raise_alert(
            session,
            "undervoltage",
            sample.device_id,
            "power supply undervoltage",
            now,
            sample.store_id,
            sample.device_id,
        )
    _check_disk(session, sample, now, disk_low)


def _check_disk(session: Session, sample: Telemetry, now: datetime, disk_low: DiskLow) -> None:
    """``disk_low`` while free space is below the threshold, cleared once it is back."""
    if sample.storage is None or sample.storage.total_bytes <= 0:  # not measured
        return
    free, total = sample.storage.free_bytes, sample.storage.total_bytes
    threshold = disk_low.threshold(total)
    if free < threshold:
        detail = (
            f"{_size(free)} free of {_size(total)} ({free * 100 // total} %),"
            f" under {_size(threshold)}"
        )
        raise_alert(
            session, "disk_low", sample.device_id, detail, now, sample.store_id, sample.device_id
        )
    else:
        clear_alert(session, "disk_low", sample.device_id, now)
        clear_alert(session, "low_disk", sample.device_id, now)  # the alert's earlier name


def check_offline(session: Session, now: datetime, threshold: timedelta) -> list[str]:
    """Raises ``device_offline`` for kiosks silent or offline past ``threshold``."""
    raised = []
    for device in session.scalars(select(FleetDevice).where(FleetDevice.role != "hq")):
        since = device.state_since if device.state == "offline" else device.last_seen
        if since is None:
            continue
        if now - since > threshold and raise_alert(
            session,
            "device_offline",
            device.device_id,
            f"{device.state} since {since.isoformat()}",
            now,
            device.store_id,
            device.device_id,
        ):
            raised.append(device.device_id)
    return raised


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    store_id: str
    role: str
    state: str
    last_seen: datetime | None
    health: str
    outbox_depth: int | None
    last_sync_at: datetime | None
    version: str
    faults: list[str]
    last_backup_at: datetime | None = None  # when the newest backup HQ holds was made


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    subject: str
    store_id: str
    device_id: str
    detail: str
    raised_at: datetime


def fleet(
    session: Session, now: datetime, threshold: timedelta, backups: BackupStore | None = None
) -> tuple[list[DeviceRow], list[AlertRow]]:
    """Every device and every open alert (offline alerts evaluated as of ``now``); with
    ``backups``, when each device's newest backup held at HQ was made."""
    check_offline(session, now, threshold)
    session.flush()
    rows = []
    for d in session.scalars(
        select(FleetDevice).order_by(FleetDevice.store_id, FleetDevice.device_id)
    ):
        faults = json.loads(d.faults or "[]")
        telemetry = json.loads(d.telemetry or "{}")
        peripherals = telemetry.get("devices", {})
        worst = "ok"
        for h in peripherals.values():
            if h.get("state") == "failed":
                worst = "failed"
            elif h.get("state") == "degraded" and worst == "ok":
                worst = "degraded"
        if not telemetry:
            worst = "unknown"
        rows.append(
            DeviceRow(
                d.device_id,
                d.store_id,
                d.role,
                d.state,
                d.last_seen,
                worst,
                d.outbox_depth,
                d.last_sync_at,
                d.version,
                list(faults),
                _newest_backup(backups, d.store_id, d.device_id),
            )
        )
    alerts = [
        AlertRow(a.id, a.kind, a.subject, a.store_id, a.device_id, a.detail, a.raised_at)
        for a in session.scalars(
            select(Alert).where(Alert.cleared_at.is_(None)).order_by(Alert.raised_at, Alert.id)
        )
    ]
    return rows, alerts


def _newest_backup(backups: BackupStore | None, store_id: str, device_id: str) -> datetime | None:
    held = backups.backups(store_id, device_id) if backups is not None else []
    return held[-1].manifest.created_at if held else None
