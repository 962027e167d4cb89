"""The fleet's and the ingest's figures in Prometheus' text format, read from HQ's database.

Everything comes from the database, not from a worker's memory, so whichever HQ worker a
scrape reaches answers the same (the console mounts :func:`fleet_metrics` at ``/metrics``).
Each figure is one cheap query: a group-by over the devices or the open alerts (small
tables), the chain's event counter, the newest stored event by its number, and the
reports' rollups for the members and the points outstanding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hq.models import EVENT_COUNTER, Alert, ChainCounter, FleetDevice, QuarantinedEvent, StoredEvent
from hq.rollups import member_count, outstanding_points

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What ``/metrics`` answers with (the text exposition format, version 0.0.4)."""


def escape_label(value: str) -> str:
    """A label value as the format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


@dataclass
class Family:
    """One metric: its name, help, type and samples (label pairs, value)."""

    name: str
    help: str
    kind: str  # gauge or counter
    samples: list[tuple[tuple[tuple[str, str], ...], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(sorted(labels.items())), value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            pairs = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            yield (
                f"{self.name}{{{pairs}}} {_number(value)}"
                if pairs
                else (f"{self.name} {_number(value)}")
            )


def collect(session: Session, now: datetime) -> list[Family]:
    """The figures, as metric families."""
    devices = Family("hq_devices", "Devices HQ has heard from, by role and state.", "gauge")
    for role, state, count in session.execute(
        select(FleetDevice.role, FleetDevice.state, func.count())
        .group_by(FleetDevice.role, FleetDevice.state)
        .order_by(FleetDevice.role, FleetDevice.state)
    ).tuples():
        devices.add(int(count), role=role, state=state)

    total, largest = session.execute(
        select(
            func.coalesce(func.sum(FleetDevice.outbox_depth), 0), func.max(FleetDevice.outbox_depth)
        )
    ).one()
    backlog = Family(
        "hq_device_outbox_events",
        "Events waiting in the devices' outboxes for HQ, as their last telemetry said (sum).",
        "gauge",
    )
    backlog.add(int(total or 0))
    backlog_max = Family(
        "hq_device_outbox_events_max",
        "The longest outbox of one device, as its last telemetry said.",
        "gauge",
    )
    backlog_max.add(int(largest or 0))

    alerts = Family("hq_alerts_open", "Alerts open (not cleared), by kind.", "gauge")
    for kind, count in session.execute(
        select(Alert.kind, func.count())
        .where(Alert.cleared_at.is_(None))
        .group_by(Alert.kind)
        .order_by(Alert.kind)
    ).tuples():
        alerts.add(int(count), kind=kind)

    stored = Family(
        "hq_events_stored_total", "Events stored at HQ (the chain's event counter).", "counter"
    )
    stored.add(
        int(
            session.scalar(select(ChainCounter.value).where(ChainCounter.name == EVENT_COUNTER))
            or 0
        )
    )
    quarantined = Family(
        "hq_events_quarantined_total",
        "Events HQ set aside (quarantined) instead of storing them.",
        "counter",
    )
    quarantined.add(int(session.scalar(select(func.count()).select_from(QuarantinedEvent)) or 0))

    members = Family("hq_members", "Members of the chain (joined, less departed).", "gauge")
    members.add(member_count(session))
    outstanding = Family(
        "hq_points_outstanding",
        "Points the members hold: the chain's points liability.",
        "gauge",
    )
    outstanding.add(outstanding_points(session))

    age = Family(
        "hq_last_event_stored_age_seconds",
        "Seconds since HQ stored its newest event (no sample before the first).",
        "gauge",
    )
    last = session.scalar(
        select(StoredEvent.received_at).order_by(StoredEvent.hq_seq.desc()).limit(1)
    )
    if last is not None:
        age.add(round(max(0.0, (now - last).total_seconds()), 3))
    return [
        devices,
        backlog,
        backlog_max,
        alerts,
        stored,
        quarantined,
        members,
        outstanding,
        age,
    ]


def fleet_metrics(session: Session, now: datetime) -> str:
    """The figures as Prometheus text exposition (``CONTENT_TYPE``), newline-terminated."""
    return "".join(line + "\n" for family in collect(session, now) for line in family.lines())
