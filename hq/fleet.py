"""The fleet monitor: every device's status and health, and the alerts HQ staff act on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edge.domain.errors import NotFound, Refusal
from edge.protocol import DeviceStatus, Telemetry
from hq.audit import Actor, record
from hq.backups import BackupStore
from hq.device_coupons import record_key
from hq.ledger import clear_alert, raise_alert
from hq.models import Alert, FleetDevice, TelemetrySample

# Telemetry kept for the device page's charts: at most one sample a minute, for 30 days.
SAMPLE_EVERY = timedelta(seconds=55)
SAMPLES_KEPT = timedelta(days=30)

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
    device.health = worst_health(sample)
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
    _check_clock(session, sample, now)
    _keep_sample(session, sample, now)


def chart_figures(sample: Telemetry) -> dict[str, float | int | None]:
    """The figures of a telemetry message the device page charts over time."""
    storage = sample.storage
    return {
        "outbox_depth": sample.outbox_depth,
        "temperature_c": sample.temperature_c,
        "camera_fps": sample.camera_fps,
        "clock_offset_s": sample.clock_offset_s,
        "disk_free_pct": (
            round(100 * storage.free_bytes / storage.total_bytes, 1)
            if storage is not None and storage.total_bytes
            else None
        ),
        "faults": len(sample.faults),
    }


def _keep_sample(session: Session, sample: Telemetry, now: datetime) -> None:
    last = session.scalar(
        select(func.max(TelemetrySample.at)).where(TelemetrySample.device_id == sample.device_id)
    )
    if last is not None and now - last < SAMPLE_EVERY:
        return
    session.add(
        TelemetrySample(
            device_id=sample.device_id, at=now, sample=json.dumps(chart_figures(sample))
        )
    )
    session.execute(
        delete(TelemetrySample).where(
            TelemetrySample.device_id == sample.device_id,
            TelemetrySample.at < now - SAMPLES_KEPT,
        )
    )


def telemetry_history(
    session: Session, device_id: str, since: datetime, max_points: int = 720
) -> list[tuple[datetime, dict[str, float | int | None]]]:
    """The device's kept telemetry samples since ``since``, oldest first: every one, or
    every n-th when there are more than ``max_points`` (a chart has so many pixels)."""
    where = (TelemetrySample.device_id == device_id, TelemetrySample.at >= since)
    count = session.scalar(select(func.count()).select_from(TelemetrySample).where(*where)) or 0
    step = max(1, -(-count // max_points))
    numbered = (
        select(
            TelemetrySample.at,
            TelemetrySample.sample,
            func.row_number().over(order_by=TelemetrySample.at).label("n"),
        )
        .where(*where)
        .subquery()
    )
    query = select(numbered.c.at, numbered.c.sample)
    if step > 1:
        query = query.where((numbered.c.n - 1) % step == 0)
    return [(at, json.loads(text)) for at, text in session.execute(query.order_by(numbered.c.at))]


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


CLOCK_OFF_S = 10.0
"""A kiosk's clock this far from HQ's is an alert: HQ dates the member codes and a kiosk
refuses one once 60 s have passed by its own clock, so a kiosk ahead cuts every code short
(the phone renews its code every 45 s: 15 s ahead and the last of it is refused)."""


def _check_clock(session: Session, sample: Telemetry, now: datetime) -> None:
    """``clock_off`` while the kiosk's clock is over :data:`CLOCK_OFF_S` from HQ's."""
    offset = sample.clock_offset_s
    if offset is None:  # not measured yet (no acknowledgement from HQ since it started)
        return
    if abs(offset) > CLOCK_OFF_S:
        way = "ahead of" if offset > 0 else "behind"
        detail = f"clock {abs(offset):.0f} s {way} HQ's: check its time service (NTP)"
        raise_alert(
            session, "clock_off", sample.device_id, detail, now, sample.store_id, sample.device_id
        )
    else:
        clear_alert(session, "clock_off", sample.device_id, now)


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
class Peripheral:
    name: str
    state: str
    code: str
    reason: str


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
    peripherals: tuple[Peripheral, ...] = ()


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    subject: str
    store_id: str
    device_id: str
    detail: str
    raised_at: datetime
    cleared_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_note: str | None = None

    @property
    def status(self) -> str:
        if self.cleared_at is not None:
            return "cleared"
        return "acknowledged" if self.acknowledged_at is not None else "open"


def _alert_row(a: Alert) -> AlertRow:
    return AlertRow(
        a.id,
        a.kind,
        a.subject,
        a.store_id,
        a.device_id,
        a.detail,
        a.raised_at,
        a.cleared_at,
        a.acknowledged_at,
        a.acknowledged_by,
        a.ack_note,
    )


ALERT_STATES = ("open", "acknowledged", "cleared")


def alerts(
    session: Session, status: str = "open", kind: str = "", store_id: str = "", limit: int = 500
) -> list[AlertRow]:
    """Alerts in one state (open: not yet acknowledged; acknowledged: seen, still open;
    cleared), newest first, optionally of one kind or store."""
    if status not in ALERT_STATES:
        raise Refusal(f"'{status}' is not an alert state", code="bad_alert_state")
    query = select(Alert)
    if status == "cleared":
        query = query.where(Alert.cleared_at.is_not(None))
    else:
        query = query.where(Alert.cleared_at.is_(None))
        query = query.where(
            Alert.acknowledged_at.is_(None)
            if status == "open"
            else Alert.acknowledged_at.is_not(None)
        )
    if kind:
        query = query.where(Alert.kind == kind)
    if store_id:
        query = query.where(Alert.store_id == store_id)
    order = Alert.cleared_at.desc() if status == "cleared" else Alert.raised_at.desc()
    return [
        _alert_row(a) for a in session.scalars(query.order_by(order, Alert.id.desc()).limit(limit))
    ]


def alert_counts(session: Session) -> dict[str, int]:
    """How many alerts are open (not acknowledged) and acknowledged."""
    rows = session.execute(
        select(Alert.acknowledged_at.is_(None), func.count())
        .where(Alert.cleared_at.is_(None))
        .group_by(Alert.acknowledged_at.is_(None))
    )
    counts = {"open": 0, "acknowledged": 0}
    for unacknowledged, n in rows:
        counts["open" if unacknowledged else "acknowledged"] = int(n)
    return counts


MAX_NOTE = 500


def acknowledge(
    session: Session, alert_id: int, note: str, actor: Actor, now: datetime
) -> AlertRow:
    """Mark an open alert seen, with a note: it stays open until what it is about clears."""
    note = " ".join(note.split())
    if not note:
        raise Refusal("say what was done about it (a note is needed)", code="note_needed")
    if len(note) > MAX_NOTE:
        raise Refusal(f"a note is at most {MAX_NOTE} characters", code="note_too_long")
    alert = session.scalar(select(Alert).where(Alert.id == alert_id).with_for_update())
    if alert is None:
        raise NotFound(f"no alert {alert_id}", code="no_alert")
    if alert.cleared_at is not None:
        raise Refusal("this alert has cleared meanwhile", code="alert_cleared")
    if alert.acknowledged_at is not None:
        raise Refusal(
            f"{alert.acknowledged_by} acknowledged this alert at {alert.acknowledged_at:%H:%M}",
            code="alert_acknowledged",
        )
    before = _alert_row(alert)
    alert.acknowledged_at = now
    alert.acknowledged_by = actor.name
    alert.ack_note = note
    record(
        session,
        actor,
        "alert.acknowledge",
        f"{alert.kind} {alert.subject}",
        now,
        before={"status": before.status},
        after={"status": "acknowledged", "note": note},
        store_id=alert.store_id,
    )
    return _alert_row(alert)


HEALTH_STATES = ("ok", "degraded", "failed", "unknown")


def worst_health(telemetry: Telemetry) -> str:
    """The worst state of a device's parts (ok when it reports none)."""
    states = {h.state for h in telemetry.devices.values()}
    for state in ("failed", "degraded"):
        if state in states:
            return state
    return "ok"


_ROW_COLUMNS = (
    FleetDevice.device_id,
    FleetDevice.store_id,
    FleetDevice.role,
    FleetDevice.state,
    FleetDevice.last_seen,
    FleetDevice.health,
    FleetDevice.outbox_depth,
    FleetDevice.last_sync_at,
    FleetDevice.version,
    FleetDevice.faults,
    FleetDevice.last_backup_at,
    FleetDevice.telemetry,
)


def _filtered(query: Any, store_id: str, state: str, health: str, text: str) -> Any:
    if store_id:
        query = query.where(FleetDevice.store_id == store_id)
    if state:
        query = query.where(FleetDevice.state == state)
    if health:
        query = query.where(FleetDevice.health == health)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(FleetDevice.device_id.like(f"%{escaped}%", escape="\\"))
    return query


def device_rows(
    session: Session,
    backups: BackupStore | None = None,
    *,
    store_id: str = "",
    state: str = "",
    health: str = "",
    text: str = "",
    offset: int = 0,
    limit: int | None = None,
) -> list[DeviceRow]:
    """Devices as they last reported, optionally of one store, state or health, or whose id
    contains ``text``; ordered by store and device, ``limit`` of them from ``offset``. Each
    device's last backup is the one HQ noted when it stored it, or with ``backups`` the
    newest found in that folder."""
    query = _filtered(select(*_ROW_COLUMNS), store_id, state, health, text)
    query = query.order_by(FleetDevice.store_id, FleetDevice.device_id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = []
    for r in session.execute(query):
        parts = json.loads(r.telemetry or "{}").get("devices", {})
        peripherals = tuple(
            Peripheral(
                name,
                str(h.get("state", "unknown")),
                str(h.get("code", "")),
                str(h.get("reason", "")),
            )
            for name, h in sorted(parts.items())
        )
        last_backup = (
            _newest_backup(backups, r.store_id, r.device_id)
            if backups is not None
            else r.last_backup_at
        )
        rows.append(
            DeviceRow(
                r.device_id,
                r.store_id,
                r.role,
                r.state,
                r.last_seen,
                r.health,
                r.outbox_depth,
                r.last_sync_at,
                r.version,
                list(json.loads(r.faults or "[]")),
                last_backup,
                peripherals,
            )
        )
    return rows


@dataclass(frozen=True)
class FleetSummary:
    devices: int
    online: int
    offline: int
    failed: int
    matching: int  # devices the filters keep


def summary(
    session: Session, *, store_id: str = "", state: str = "", health: str = "", text: str = ""
) -> FleetSummary:
    """How many devices there are, online, offline, with a failed part; and how many match."""
    counts = {"devices": 0, "online": 0, "offline": 0, "failed": 0}
    for st, hl, n in session.execute(
        select(FleetDevice.state, FleetDevice.health, func.count()).group_by(
            FleetDevice.state, FleetDevice.health
        )
    ):
        counts["devices"] += n
        if st in ("online", "offline"):
            counts[st] += n
        if hl == "failed":
            counts["failed"] += n
    matching = session.scalar(
        _filtered(select(func.count()).select_from(FleetDevice), store_id, state, health, text)
    )
    return FleetSummary(**counts, matching=int(matching or 0))


def fleet(
    session: Session, now: datetime, threshold: timedelta, backups: BackupStore | None = None
) -> tuple[list[DeviceRow], list[AlertRow]]:
    """Every device and every open alert (offline alerts evaluated as of ``now``); with
    ``backups``, when each device's newest backup held at HQ was made."""
    check_offline(session, now, threshold)
    session.flush()
    rows = device_rows(session, backups)
    open_alerts = [
        _alert_row(a)
        for a in session.scalars(
            select(Alert).where(Alert.cleared_at.is_(None)).order_by(Alert.raised_at, Alert.id)
        )
    ]
    return rows, open_alerts


def _newest_backup(backups: BackupStore | None, store_id: str, device_id: str) -> datetime | None:
    held = backups.backups(store_id, device_id) if backups is not None else []
    return held[-1].manifest.created_at if held else None
