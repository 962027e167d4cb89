"""Staged rollouts: one bundle HQ keeps (:mod:`hq.bundles`) sent to a ring of kiosks a few at
a time, watched through what the devices report, and halted by itself when too many fail.

A rollout is data (``hq_rollout``, and a row per kiosk in ``hq_rollout_device``); nothing
about it lives in a process. :func:`step`, which every HQ worker runs every few seconds and
``kiosk hq rollout step`` runs once, moves it on:

- a kiosk ``sent`` its ``update`` command is judged from what HQ heard since: ``installed``
  once its telemetry shows the bundle's version while it is online and healthy; ``failed``
  when it answered the command with anything but ``done`` (a refusal, a failed download,
  an expired command), when its telemetry reports the update rolled back or refused
  (the fault ``update:<rolled_back|refused>:<version>:<started>``, see
  :func:`edge.lifecycle.update.update_fault`), or when it has not come back on the
  version within the rollout's ``timeout_s``; ``skipped`` when it says it runs that
  version or a newer one already;
- a ``pending`` kiosk already on the bundle's version or a newer one is ``skipped``, and so
  is one offline for longer than ``offline_limit_s`` (counted from when the rollout added
  it); the others are sent their command, at most ``in_flight`` at a time;
- when more than ``max_failure_pct`` of the kiosks sent a command since the rollout
  started (or was last resumed) failed, with at least ``min_attempts`` sent, the rollout
  halts: an ``update_failed`` alert for it, as for each kiosk that failed;
- when every kiosk has its verdict the rollout is ``finished``; widening it to a larger
  ring (:func:`widen_rollout`) sets it running again.

Results of the commands reach HQ's workers on the devices' ``command/result`` topics;
:func:`record_result` keeps them and judges the kiosk at once, so the threshold is checked
where the results arrive. Every step locks the rollouts it moves (``SELECT ... FOR UPDATE``
on PostgreSQL, SQLite's one writer elsewhere): several workers stepping at once never send a
kiosk's command twice.

What a person does (upload, start, widen, halt, resume, cancel) goes through
:func:`hq.audit.record` in the same transaction; so does a halt the threshold made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.version import InvalidVersion, Version
from sqlalchemy import ColumnElement, false, func, select, text, update
from sqlalchemy.orm import Session

from edge.domain.errors import ConfigError, InvalidInput, NotFound, Refusal
from edge.protocol import Command, CommandResult, check_name
from hq.audit import Actor, record
from hq.bundles import bundle_url, find_bundle
from hq.commands import BundleFacts, load_command_key, update_offer
from hq.ledger import clear_alert, raise_alert
from hq.models import EnrolledDevice, FleetDevice, Rollout, RolloutDevice, UpdateBundle
from hq.service import HqConfig

RUNNING, HALTED, FINISHED, CANCELLED = "running", "halted", "finished", "cancelled"
PENDING, SENT, INSTALLED, FAILED, SKIPPED = "pending", "sent", "installed", "failed", "skipped"
DEVICE_STATES = (PENDING, SENT, INSTALLED, FAILED, SKIPPED)
ALERT = "update_failed"
UPDATE_FAULT = "update"  # edge.lifecycle.update.UPDATE_FAULT, as the devices report it
AUTOMATIC = Actor("hq", "hq")  # who halts a rollout that passed its threshold
# A device's clock and HQ's differ a little: a fault dated this much before the command was
# sent is still taken as this attempt's.
CLOCK_SLACK = timedelta(minutes=2)
_BUCKETS = 10_000  # a kiosk's place in the fleet for percentage rings: 0.01 % steps
_CHUNK = 500


# -- rings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    """Which kiosks a rollout reaches: ``device:ID``, ``store:ID``, ``percent:N`` (a stable
    N % of the fleet's kiosks) or ``all``."""

    kind: str
    value: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.value}"


def parse_ring(text: str) -> Ring:
    """``device:ID``, ``store:ID``, ``percent:N`` (1 to 100) or ``all``.

    Raises:
        InvalidInput: ``bad_ring``, one line saying what a ring is.
    """
    kind, sep, value = text.strip().partition(":")
    kind = kind.lower()
    if kind == "all" and not sep:
        return Ring("all")
    if kind in ("device", "store") and sep:
        try:
            return Ring(kind, check_name(value))
        except ValueError:
            pass
    number = value.isascii() and value.isdigit()
    if kind == "percent" and sep and number and 1 <= int(value) <= 100:
        return Ring(kind, str(int(value)))
    raise InvalidInput(
        f"{text[:80]!r} is not a ring: say device:ID, store:ID, percent:N (1-100) or all",
        code="bad_ring",
    )


def fleet_bucket(device_id: str) -> int:
    """The kiosk's place in the fleet, 0 to 9,999, by a hash of its id alone: the same for
    every rollout, so ``percent:10`` is always the same kiosks and ``percent:25`` holds them."""
    digest = hashlib.sha256(b"mck-rollout:" + device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def in_percent(device_id: str, percent: int) -> bool:
    return fleet_bucket(device_id) < percent * (_BUCKETS // 100)


def ring_devices(session: Session, ring: Ring) -> list[tuple[str, str]]:
    """(device, store) of the kiosks in ``ring``, by device id: HQ's fleet's kiosks (never a
    lane or an HQ worker), less those the enrolment desk revoked or retired."""
    query = (
        select(FleetDevice.device_id, FleetDevice.store_id)
        .where(FleetDevice.role == "kiosk")
        .where(
            FleetDevice.device_id.not_in(
                select(EnrolledDevice.device_id).where(EnrolledDevice.state != "active")
            )
        )
        .order_by(FleetDevice.device_id)
    )
    if ring.kind == "device":
        query = query.where(FleetDevice.device_id == ring.value)
    elif ring.kind == "store":
        query = query.where(FleetDevice.store_id == ring.value)
    rows = [(d, s) for d, s in session.execute(query).tuples()]
    if ring.kind == "percent":
        rows = [(d, s) for d, s in rows if in_percent(d, int(ring.value))]
    return rows


# -- what a rollout is --------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutPolicy:
    """How fast a rollout goes and when it stops itself."""

    max_failure_pct: int = 20  # halt when more than this % of the kiosks sent a command failed
    min_attempts: int = 5  # ... once at least this many were sent one
    in_flight: int = 10  # kiosks sent a command and not yet judged, at most
    timeout_s: int = 3600  # a kiosk not back on the new version this long after it: failed
    offline_limit_s: int = 24 * 3600  # a kiosk offline this long while pending: skipped

    def check(self) -> None:
        """Raises:
        InvalidInput: ``bad_policy``, naming the value out of range."""
        limits = (
            ("max failure %", self.max_failure_pct, 0, 100),
            ("min attempts", self.min_attempts, 1, 100_000),
            ("in flight", self.in_flight, 1, 10_000),
            ("timeout (s)", self.timeout_s, 60, 7 * 24 * 3600),
            ("offline limit (s)", self.offline_limit_s, 60, 90 * 24 * 3600),
        )
        for what, value, low, high in limits:
            if not low <= value <= high:
                raise InvalidInput(
                    f"{what} must be from {low} to {high}, not {value}", code="bad_policy"
                )


@dataclass(frozen=True)
class DeviceProgress:
    """One kiosk of a rollout."""

    device_id: str
    store_id: str
    ring: str
    state: str
    from_version: str
    sent_at: datetime | None
    result: str | None  # the device's answer to the command: done, refused, failed ...
    done_at: datetime | None
    reason: str


@dataclass(frozen=True)
class RolloutView:
    """A rollout, how many of its kiosks are in each state and, when asked for, each one."""

    id: int
    bundle_sha256: str
    version: str
    ring: str
    state: str
    policy: RolloutPolicy
    created_by: str
    created_at: datetime
    updated_at: datetime
    halted_reason: str
    finished_at: datetime | None
    counts: dict[str, int]
    devices: list[DeviceProgress] = field(default_factory=list)


def _policy(row: Rollout) -> RolloutPolicy:
    return RolloutPolicy(
        row.max_failure_pct, row.min_attempts, row.in_flight, row.timeout_s, row.offline_limit_s
    )


def _counts(session: Session, rollout_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    ids = list(rollout_ids)
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(DEVICE_STATES, 0) for i in ids}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(RolloutDevice.rollout_id, RolloutDevice.state, func.count())
            .where(RolloutDevice.rollout_id.in_(ids[start : start + _CHUNK]))
            .group_by(RolloutDevice.rollout_id, RolloutDevice.state)
        ).tuples()
        for rollout_id, state, n in rows:
            counts[rollout_id][state] = int(n)
    return counts


def _view(row: Rollout, counts: dict[str, int], devices: list[DeviceProgress]) -> RolloutView:
    return RolloutView(
        row.id,
        row.bundle_sha256,
        row.version,
        row.ring,
        row.state,
        _policy(row),
        row.created_by,
        row.created_at,
        row.updated_at,
        row.halted_reason,
        row.finished_at,
        counts,
        devices,
    )


def _summary(row: Rollout) -> dict[str, Any]:
    """What the audit log keeps of a rollout."""
    return {
        "state": row.state,
        "ring": row.ring,
        "version": row.version,
        "bundle": row.bundle_sha256,
        "halted_reason": row.halted_reason,
    }


def list_rollouts(session: Session) -> list[RolloutView]:
    """Every rollout, the newest first, with its kiosks counted by state."""
    rows = session.scalars(select(Rollout).order_by(Rollout.id.desc())).all()
    counts = _counts(session, [r.id for r in rows])
    return [_view(r, counts[r.id], []) for r in rows]


def rollout_status(session: Session, rollout_id: int) -> RolloutView:
    """A rollout with each of its kiosks (by store and device).

    Raises:
        NotFound: no such rollout.
    """
    row = _get(session, rollout_id)
    devices = [
        DeviceProgress(
            t.device_id,
            t.store_id,
            t.ring,
            t.state,
            t.from_version,
            t.sent_at,
            t.result_status,
            t.done_at,
            t.reason,
        )
        for t in session.scalars(
            select(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout_id)
            .order_by(RolloutDevice.store_id, RolloutDevice.device_id)
        )
    ]
    return _view(row, _counts(session, [row.id])[row.id], devices)


def _get(session: Session, rollout_id: int) -> Rollout:
    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id} at HQ (see `kiosk hq rollout status`)")
    return row


def _lock(session: Session, where: ColumnElement[bool]) -> list[Rollout]:
    """The rollouts ``where`` says, locked until the transaction ends: ``SELECT ... FOR
    UPDATE`` on PostgreSQL; on SQLite, whose one writer at a time starts at its first
    write, a write that changes nothing, before anything is read."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(
            update(Rollout)
            .where(where)
            .values(id=Rollout.id)
            .execution_options(synchronize_session=False)
        )
        query = select(Rollout).where(where)
    else:
        query = select(Rollout).where(where).with_for_update()
    return list(
        session.scalars(query.order_by(Rollout.id).execution_options(populate_existing=True))
    )


def _locked(session: Session, rollout_id: int) -> Rollout:
    rows = _lock(session, Rollout.id == rollout_id)
    if not rows:
        raise NotFound(f"no rollout {rollout_id} at HQ (see `kiosk hq rollout status`)")
    return rows[0]


def _one_at_a_time(session: Session, but: int | None = None) -> None:
    """Refuses while a rollout (other than ``but``) is running or halted. Two people starting
    one at the same moment are taken one after the other: on PostgreSQL the table is locked
    against another start (not against the steps' row locks) until the commit, on SQLite the
    one writer is taken first.

    Raises:
        Refusal: ``rollout_active``.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE hq_rollout IN SHARE ROW EXCLUSIVE MODE"))
    else:
        session.execute(
            update(Rollout)
            .where(false())
            .values(id=Rollout.id)
            .execution_options(synchronize_session=False)
        )
    query = select(Rollout).where(Rollout.state.in_((RUNNING, HALTED)))
    if but is not None:
        query = query.where(Rollout.id != but)
    active = session.scalar(query.order_by(Rollout.id))
    if active is not None:
        raise Refusal(
            f"rollout {active.id} ({active.version}, {active.ring}) is {active.state}: "
            "one rollout at a time; let it finish, or cancel it",
            code="rollout_active",
        )


def _add_devices(
    session: Session, rollout: Rollout, devices: list[tuple[str, str]], ring: Ring, now: datetime
) -> None:
    session.add_all(
        RolloutDevice(
            rollout_id=rollout.id,
            device_id=device_id,
            store_id=store_id,
            ring=str(ring),
            state=PENDING,
            added_at=now,
            from_version="",
            reason="",
        )
        for device_id, store_id in devices
    )


# -- what a person does -------------------------------------------------------------------------


def start_rollout(
    session: Session,
    bundle: str,
    ring: Ring,
    actor: Actor,
    now: datetime,
    policy: RolloutPolicy | None = None,
) -> RolloutView:
    """Start rolling the bundle ``bundle`` (its SHA-256, or 8 or more of its first hex digits)
    out to the kiosks of ``ring``; :func:`step` sends the commands.

    Raises:
        InvalidInput: a policy value out of range. NotFound: no such bundle.
        Refusal: ``rollout_active`` (another rollout is running or halted: one at a time),
            ``empty_ring`` (the ring holds no kiosk).
    """
    policy = policy or RolloutPolicy()
    policy.check()
    kept = find_bundle(session, bundle)
    _one_at_a_time(session)
    devices = ring_devices(session, ring)
    if not devices:
        raise Refusal(f"ring {ring} holds no kiosk HQ knows", code="empty_ring")
    row = Rollout(
        bundle_sha256=kept.sha256,
        version=kept.version,
        ring=str(ring),
        state=RUNNING,
        max_failure_pct=policy.max_failure_pct,
        min_attempts=policy.min_attempts,
        in_flight=policy.in_flight,
        timeout_s=policy.timeout_s,
        offline_limit_s=policy.offline_limit_s,
        created_by=actor.name[:64],
        created_at=now,
        updated_at=now,
        counted_from=now,
        halted_reason="",
    )
    session.add(row)
    session.flush()
    _add_devices(session, row, devices, ring, now)
    record(
        session,
        actor,
        "rollout.start",
        f"rollout:{row.id}",
        now,
        after={**_summary(row), "policy": policy.__dict__, "devices": len(devices)},
    )
    session.flush()
    return rollout_status(session, row.id)


def widen_rollout(
    session: Session, rollout_id: int, ring: Ring, actor: Actor, now: datetime
) -> RolloutView:
    """Add the kiosks of ``ring`` the rollout does not hold yet (the next ring: a store, a
    larger percentage, everyone); a finished rollout runs again for them.

    Raises:
        NotFound: no such rollout. Refusal: ``rollout_halted`` (resume it first),
            ``rollout_cancelled``, ``empty_ring`` (the ring adds no kiosk).
    """
    row = _locked(session, rollout_id)
    if row.state == HALTED:
        raise Refusal(
            f"rollout {rollout_id} is halted ({row.halted_reason}): resume it before widening",
            code="rollout_halted",
        )
    if row.state == CANCELLED:
        raise Refusal(f"rollout {rollout_id} was cancelled", code="rollout_cancelled")
    if row.state == FINISHED:
        _one_at_a_time(session, but=rollout_id)  # it runs again
    held = set(
        session.scalars(
            select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == rollout_id)
        )
    )
    new = [(d, s) for d, s in ring_devices(session, ring) if d not in held]
    if not new:
        raise Refusal(
            f"ring {ring} adds no kiosk to rollout {rollout_id} (it holds {len(held)})",
            code="empty_ring",
        )
    before = {**_summary(row), "devices": len(held)}
    _add_devices(session, row, new, ring, now)
    row.ring, row.state, row.finished_at, row.updated_at = str(ring), RUNNING, None, now
    record(
        session,
        actor,
        "rollout.widen",
        f"rollout:{rollout_id}",
        now,
        before=before,
        after={**_summary(row), "devices": len(held) + len(new), "added": len(new)},
    )
    session.flush()
    return rollout_status(session, rollout_id)


def halt_rollout(
    session: Session, rollout_id: int, reason: str, actor: Actor, now: datetime
) -> RolloutView:
    """Stop sending commands (the kiosks sent one already are still watched).

    Raises:
        InvalidInput: no reason. NotFound. Refusal: ``not_running``.
    """
    why = " ".join(reason.split())
    if not why:
        raise InvalidInput("say why the rollout is halted (--reason)", code="no_reason")
    row = _locked(session, rollout_id)
    if row.state != RUNNING:
        raise Refusal(f"rollout {rollout_id} is {row.state}, not running", code="not_running")
    before = _summary(row)
    row.state, row.updated_at = HALTED, now
    row.halted_reason = f"halted by {actor.name}: {why}"[:1000]
    record(
        session, actor, "rollout.halt", f"rollout:{rollout_id}", now, before=before,
        after=_summary(row),
    )  # fmt: skip
    session.flush()
    return rollout_status(session, rollout_id)


def resume_rollout(session: Session, rollout_id: int, actor: Actor, now: datetime) -> RolloutView:
    """Send commands again; the failure threshold counts the kiosks sent one from now on.

    Raises:
        NotFound. Refusal: ``not_halted``.
    """
    row = _locked(session, rollout_id)
    if row.state != HALTED:
        raise Refusal(f"rollout {rollout_id} is {row.state}, not halted", code="not_halted")
    before = _summary(row)
    row.state, row.halted_reason, row.counted_from, row.updated_at = RUNNING, "", now, now
    clear_alert(session, ALERT, f"rollout:{rollout_id}", now)
    record(
        session, actor, "rollout.resume", f"rollout:{rollout_id}", now, before=before,
        after=_summary(row),
    )  # fmt: skip
    session.flush()
    return rollout_status(session, rollout_id)


def cancel_rollout(session: Session, rollout_id: int, actor: Actor, now: datetime) -> RolloutView:
    """End the rollout: its pending kiosks are skipped (those sent a command already are
    still watched, and may install it).

    Raises:
        NotFound. Refusal: ``rollout_over`` (finished or cancelled already).
    """
    row = _locked(session, rollout_id)
    if row.state not in (RUNNING, HALTED):
        raise Refusal(f"rollout {rollout_id} is {row.state} already", code="rollout_over")
    before = _summary(row)
    session.execute(
        update(RolloutDevice)
        .where(RolloutDevice.rollout_id == rollout_id, RolloutDevice.state == PENDING)
        .values(state=SKIPPED, done_at=now, reason=f"the rollout was cancelled by {actor.name}")
        .execution_options(synchronize_session=False)
    )
    row.state, row.finished_at, row.updated_at = CANCELLED, now, now
    clear_alert(session, ALERT, f"rollout:{rollout_id}", now)
    record(
        session, actor, "rollout.cancel", f"rollout:{rollout_id}", now, before=before,
        after=_summary(row),
    )  # fmt: skip
    session.flush()
    return rollout_status(session, rollout_id)


# -- the step -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateSigner:
    """Makes the signed ``update`` commands: HQ's command key, and where the devices fetch
    the bundles (``bundle_base_url``)."""

    key: Ed25519PrivateKey
    base_url: str

    def command(
        self, device_id: str, rollout: Rollout, size: int, ttl: timedelta, now: datetime
    ) -> Command:
        facts = BundleFacts(rollout.version, rollout.bundle_sha256, size)
        url = bundle_url(self.base_url, rollout.bundle_sha256)
        return update_offer(self.key, device_id, facts, url, ttl, now, secrets.token_hex(8))


def signer_for(config: HqConfig) -> UpdateSigner:
    """The signer ``config`` allows.

    Raises:
        ConfigError: ``no_command_key`` or ``no_bundle_base_url``, in one line.
    """
    if not config.command_key or not Path(config.command_key).is_file():
        raise ConfigError(
            "no command key to sign the update commands: pass --tls-dir or command_key",
            code="no_command_key",
        )
    if not config.bundle_base_url:
        raise ConfigError(
            "no bundle_base_url: the devices would not know where to fetch the bundle "
            "(say where HQ's web console serves /bundles/, e.g. https://hq.example.net)",
            code="no_bundle_base_url",
        )
    return UpdateSigner(load_command_key(Path(config.command_key)), config.bundle_base_url)


Send = Callable[[Command], None]
"""Delivers a signed command and returns without waiting for the answer; raises
``ConnectionError`` (or ``OSError``) when it cannot."""


@dataclass
class StepReport:
    """What one step did: the (rollout, device) pairs sent, judged installed, failed or
    skipped; the rollouts halted or finished; why pending kiosks were not sent (no signer, no
    broker)."""

    sent: list[tuple[int, str]] = field(default_factory=list)
    installed: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    halted: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    unsent: str = ""


def _order(version: str, target: str) -> int | None:
    """-1, 0 or 1 as ``version`` is older than, the same as or newer than ``target`` (PEP
    440, as the devices order them); ``None`` when they cannot be ordered."""
    if version == target:
        return 0
    try:
        a, b = Version(version), Version(target)
    except InvalidVersion:
        return None
    return (a > b) - (a < b)


def _failed_peripherals(device: FleetDevice) -> list[str]:
    try:
        telemetry = json.loads(device.telemetry or "{}")
        peripherals = dict(telemetry.get("devices") or {})
    except (ValueError, TypeError, AttributeError):
        return []
    return sorted(
        n for n, h in peripherals.items() if isinstance(h, dict) and h.get("state") == "failed"
    )


def _update_fault(device: FleetDevice, version: str, since: datetime) -> str | None:
    """``rolled_back`` or ``refused`` when the device's telemetry reports an attempt at
    ``version`` that did not install, begun no earlier than ``since`` (less the clock
    slack): an attempt before this rollout's command is not this one."""
    try:
        faults = json.loads(device.faults or "[]")
    except ValueError:
        return None
    for fault in faults if isinstance(faults, list) else []:
        parts = str(fault).split(":", 3)
        if len(parts) != 4 or parts[0] != UPDATE_FAULT or parts[2] != version:
            continue
        try:
            started = datetime.fromisoformat(parts[3].replace("Z", "+00:00"))
        except ValueError:
            continue
        if started.tzinfo is not None and started >= since - CLOCK_SLACK:
            return parts[1]
    return None


def _verdict(
    rollout: Rollout, target: RolloutDevice, device: FleetDevice | None, now: datetime
) -> tuple[str, str] | None:
    """A sent kiosk's state from what HQ heard since (None: not known yet)."""
    if target.result_status is not None and target.result_status != "done":
        detail: dict[str, Any] = {}
        try:
            loaded = json.loads(target.result_detail or "{}")
            detail = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            pass
        error = str(detail.get("error") or "")
        if target.result_status == "refused" and error == "already_current":
            return SKIPPED, f"the device runs {rollout.version} already"
        if target.result_status == "refused" and error == "downgrade":
            return SKIPPED, f"the device runs a version newer than {rollout.version}"
        why = str(detail.get("reason") or detail.get("message") or detail.get("expired_at") or "")
        said = target.result_status + (f" ({error})" if error else "")
        return FAILED, f"the device answered {said}" + (f": {why}" if why else "")
    sent_at = target.sent_at or now
    order = None
    if device is not None:
        fault = _update_fault(device, rollout.version, sent_at)
        if fault is not None:
            what = "rolled it back" if fault == "rolled_back" else "did not install it"
            return FAILED, f"the device's installer {what} (see updates/history.jsonl there)"
        order = _order(device.version, rollout.version)
        unwell = _failed_peripherals(device)
        if order == 0 and device.state == "online" and not unwell:
            return INSTALLED, ""
        if order is not None and order > 0:
            return SKIPPED, f"the device runs {device.version}, newer than {rollout.version}"
    if now - sent_at <= timedelta(seconds=rollout.timeout_s):
        return None
    waited = f"{rollout.timeout_s // 60} min"
    if device is not None and order == 0:
        unwell = _failed_peripherals(device)
        how = f"failed: {', '.join(unwell)}" if unwell else device.state
        return (
            FAILED,
            f"the device runs {rollout.version} but is not healthy ({how}) after {waited}",
        )
    return FAILED, f"the device did not come back on {rollout.version} within {waited}"


def _judge(
    session: Session,
    rollout: Rollout,
    target: RolloutDevice,
    device: FleetDevice | None,
    now: datetime,
    report: StepReport,
) -> None:
    verdict = _verdict(rollout, target, device, now)
    if verdict is None:
        return
    target.state, target.reason, target.done_at = verdict[0], verdict[1][:1000], now
    pair = (rollout.id, target.device_id)
    if target.state == INSTALLED:
        report.installed.append(pair)
        clear_alert(session, ALERT, target.device_id, now)
    elif target.state == SKIPPED:
        report.skipped.append(pair)
    else:
        report.failed.append(pair)
        raise_alert(
            session,
            ALERT,
            target.device_id,
            f"rollout {rollout.id}: the update to {rollout.version} failed: {target.reason}",
            now,
            target.store_id,
            target.device_id,
        )


def _check_threshold(session: Session, rollout: Rollout, now: datetime, report: StepReport) -> None:
    """Halts a running rollout whose failures passed its threshold, with an alert."""
    if rollout.state != RUNNING:
        return
    counted = (
        RolloutDevice.rollout_id == rollout.id,
        RolloutDevice.sent_at.is_not(None),
        RolloutDevice.sent_at >= rollout.counted_from,
    )
    count = select(func.count()).select_from(RolloutDevice).where(*counted)
    attempted = session.scalar(count) or 0
    failed = session.scalar(count.where(RolloutDevice.state == FAILED)) or 0
    if attempted < rollout.min_attempts or failed * 100 <= rollout.max_failure_pct * attempted:
        return
    before = _summary(rollout)
    rollout.state, rollout.updated_at = HALTED, now
    rollout.halted_reason = (
        f"{failed} of {attempted} kiosks sent the update failed "
        f"({failed * 100 // attempted} %, more than {rollout.max_failure_pct} %)"
    )
    raise_alert(
        session,
        ALERT,
        f"rollout:{rollout.id}",
        f"rollout {rollout.id} of {rollout.version} ({rollout.ring}) halted: "
        f"{rollout.halted_reason}",
        now,
    )
    record(
        session, AUTOMATIC, "rollout.halt", f"rollout:{rollout.id}", now, before=before,
        after=_summary(rollout),
    )  # fmt: skip
    report.halted.append(rollout.id)


def _fleet(session: Session, device_ids: list[str]) -> dict[str, FleetDevice]:
    found: dict[str, FleetDevice] = {}
    for start in range(0, len(device_ids), _CHUNK):
        for d in session.scalars(
            select(FleetDevice).where(FleetDevice.device_id.in_(device_ids[start : start + _CHUNK]))
        ):
            found[d.device_id] = d
    return found


def _offline_since(device: FleetDevice | None, target: RolloutDevice) -> datetime | None:
    """Since when a pending kiosk counts as offline for the rollout (None: it is online)."""
    if device is not None and device.state == "online":
        return None
    since = None if device is None else (device.state_since or device.last_seen)
    return max(since, target.added_at) if since is not None else target.added_at


def _advance(
    session: Session,
    rollout: Rollout,
    now: datetime,
    send: Send,
    signer: UpdateSigner | None,
    report: StepReport,
) -> None:
    targets = session.scalars(
        select(RolloutDevice)
        .where(RolloutDevice.rollout_id == rollout.id, RolloutDevice.state.in_((PENDING, SENT)))
        .order_by(RolloutDevice.added_at, RolloutDevice.device_id)
        .execution_options(populate_existing=True)
    ).all()
    fleet = _fleet(session, [t.device_id for t in targets])
    for target in targets:
        if target.state == SENT:
            _judge(session, rollout, target, fleet.get(target.device_id), now, report)
    _check_threshold(session, rollout, now, report)
    if rollout.state == RUNNING:
        _send_pending(session, rollout, targets, fleet, now, send, signer, report)
        if not any(t.state in (PENDING, SENT) for t in targets):
            rollout.state, rollout.finished_at, rollout.updated_at = FINISHED, now, now
            report.finished.append(rollout.id)
    rollout.stepped_at = now


def _send_pending(
    session: Session,
    rollout: Rollout,
    targets: Sequence[RolloutDevice],
    fleet: dict[str, FleetDevice],
    now: datetime,
    send: Send,
    signer: UpdateSigner | None,
    report: StepReport,
) -> None:
    """Skips the pending kiosks that need no command or are gone too long; sends the others
    their command while fewer than ``in_flight`` wait for their verdict."""
    in_flight = sum(1 for t in targets if t.state == SENT)
    size: int | None = None
    limit = timedelta(seconds=rollout.offline_limit_s)
    for target in targets:
        if target.state != PENDING:
            continue
        device = fleet.get(target.device_id)
        order = None if device is None else _order(device.version, rollout.version)
        if device is not None and order is not None and order >= 0:
            target.state, target.done_at = SKIPPED, now
            target.reason = f"runs {device.version} already"
            report.skipped.append((rollout.id, target.device_id))
            continue
        offline = _offline_since(device, target)  # never None for a kiosk HQ never heard of
        if device is None or offline is not None:
            if offline is not None and now - offline > limit:
                target.state, target.done_at = SKIPPED, now
                target.reason = f"offline since {offline:%Y-%m-%d %H:%M} UTC"
                report.skipped.append((rollout.id, target.device_id))
            continue
        if in_flight >= rollout.in_flight or report.unsent:
            continue
        if signer is None:
            report.unsent = "no signer: HQ's command key or bundle_base_url is not configured"
            continue
        if size is None:
            size = session.scalar(
                select(UpdateBundle.size).where(UpdateBundle.sha256 == rollout.bundle_sha256)
            )
            if size is None:
                report.unsent = f"the bundle {rollout.bundle_sha256[:12]} is no longer at HQ"
                continue
        ttl = timedelta(seconds=rollout.timeout_s)
        command = signer.command(target.device_id, rollout, size, ttl, now)
        target.state, target.transaction_id, target.sent_at = SENT, command.transaction, now
        target.from_version = device.version[:64]
        session.flush()  # a database that refuses the change refuses it before anything is sent
        try:
            send(command)
        except (ConnectionError, OSError) as exc:
            target.state, target.transaction_id, target.sent_at = PENDING, None, None
            target.from_version = ""
            report.unsent = f"not sent: {exc}"
            continue
        in_flight += 1
        report.sent.append((rollout.id, target.device_id))


def step(session: Session, now: datetime, send: Send, signer: UpdateSigner | None) -> StepReport:
    """Moves every rollout on (see the module's docstring): judges the kiosks sent a command,
    halts a rollout past its threshold, skips and sends pending kiosks, finishes a rollout
    whose kiosks all have their verdict. Sends only for running rollouts, and only with a
    ``signer``; still judges the kiosks of halted or cancelled ones.

    Call it at the start of a transaction (it locks the rollouts it moves until the commit):
    the commands are sent from inside it, so a second caller waits for the first and finds
    them sent.
    """
    report = StepReport()
    moving = (
        select(Rollout.id)
        .where(Rollout.state == RUNNING)
        .union(select(RolloutDevice.rollout_id).where(RolloutDevice.state == SENT))
    )
    ids = sorted(set(session.scalars(moving)))
    if not ids:
        return report
    for rollout in _lock(session, Rollout.id.in_(ids)):
        _advance(session, rollout, now, send, signer, report)
    session.flush()
    return report


def record_result(session: Session, result: CommandResult, now: datetime) -> bool:
    """Keeps a device's answer to a rollout's command (the first one: a replay changes
    nothing) and judges the kiosk at once; False when the answer is to no rollout's command.
    """
    found = session.execute(
        select(RolloutDevice.rollout_id).where(
            RolloutDevice.transaction_id == result.transaction,
            RolloutDevice.device_id == result.device_id,
        )
    ).first()
    if found is None:
        return False
    rollout = _locked(session, found[0])
    target = session.get(RolloutDevice, (rollout.id, result.device_id), populate_existing=True)
    if target is None or target.result_status is not None:
        return False
    target.result_status = result.status[:16]
    target.result_detail = json.dumps(result.detail, default=str, sort_keys=True)[:20_000]
    target.result_at = now
    if target.state == SENT:
        report = StepReport()
        _judge(session, rollout, target, session.get(FleetDevice, result.device_id), now, report)
        _check_threshold(session, rollout, now, report)
    session.flush()
    return True
