"""HQ's Prometheus figures parse as the text exposition format and say what the database
holds, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch
from hq.ledger import CentralLedger, balances, raise_alert
from hq.metrics import CONTENT_TYPE, escape_label, fleet_metrics
from hq.models import Alert, CentralMember, FleetDevice
from tests.hq.database import HQ_VAULT
from tests.hq.reconcile import make_chain

ids = IdFactory()
STORED_AT = datetime(2026, 3, 27, 9, 0, tzinfo=UTC)
SCRAPED_AT = STORED_AT + timedelta(seconds=42.5)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')
HELP = re.compile(rf"^# HELP ({NAME}) ((?:[^\\\n]|\\\\|\\n)*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse(exposition: str) -> tuple[dict[str, str], dict[tuple[str, tuple], float]]:
    """A small reader of the text format (0.0.4): each family's HELP and TYPE before its
    samples, label values with their escapes, numbers as Prometheus reads them. Returns
    (type of each family, {(name, labels): value}); raises AssertionError on a bad line."""
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[tuple[str, tuple], float] = {}
    assert exposition.endswith("\n")
    for line in exposition.splitlines():
        if line.startswith("# HELP"):
            found = HELP.match(line)
            assert found, line
            assert found.group(1) not in helped, f"second HELP: {line}"
            helped.add(found.group(1))
        elif line.startswith("# TYPE"):
            found = TYPE.match(line)
            assert found and found.group(1) not in types, line
            types[found.group(1)] = found.group(2)
        else:
            found = SAMPLE.match(line)
            assert found, line
            name, raw_labels, value = found.groups()
            assert name in types and name in helped, f"sample before its HELP/TYPE: {line}"
            labels: list[tuple[str, str]] = []
            rest = raw_labels or ""
            while rest:
                pair = LABEL.match(rest)
                assert pair, line
                labels.append((pair.group(1), _unescape(pair.group(2))))
                rest = rest[pair.end() :]
            key = (name, tuple(labels))
            assert key not in samples, f"sample twice: {line}"
            samples[key] = float(value)
    for name, kind in types.items():
        assert kind != "counter" or name.endswith("_total"), name
    return types, samples


def test_escaping_a_label_value():
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert _unescape(escape_label('a\\b"c\nd')) == 'a\\b"c\nd'


def test_the_figures_parse_and_are_the_databases(engine):
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    chain = make_chain(seed=5, per_device=40)
    for device, batch in chain.deliveries:
        with Session(engine) as s, s.begin():
            ledger.ingest(s, device, batch, STORED_AT)
    forged = Event(
        event_id=ids.new(), kind="points.accrued", store_id="S002", device_id="K003",
        at=STORED_AT, data={"member_id": ids.new(), "entries": []},
        seq=len(chain.events["K001"]) + 1,
    )  # fmt: skip
    with Session(engine) as s, s.begin():
        # Another device's event in K001's batch: set aside, not stored.
        quarantined = ledger.ingest(
            s, "K001", EventBatch(device_id="K001", batch_id=ids.new(), events=[forged]), STORED_AT
        )
        assert quarantined.quarantined
        devices = [
            ("K001", "kiosk", "online", 3), ("K002", "kiosk", "online", 0),
            ("K003", "kiosk", "offline", 250), ("L001", "lane", "online", None),
            ("L002", 'la"ne\\x\ny', "unknown", 7),
        ]  # fmt: skip
        for device_id, role, state, depth in devices:
            s.add(FleetDevice(device_id=device_id, store_id="S001", role=role, state=state,
                              outbox_depth=depth))  # fmt: skip
        raise_alert(s, "device_offline", "K003", "offline for 10 min", STORED_AT)
        raise_alert(s, "gift_low_stock", "S001:G-TEA", "3 left", STORED_AT)
        raise_alert(s, "gift_low_stock", "S002:G-MUG", "1 left", STORED_AT)
        raise_alert(s, "printer_paper_out", "K002", "out", STORED_AT)
        s.flush()
        s.execute(
            update(Alert).where(Alert.kind == "printer_paper_out").values(cleared_at=STORED_AT)
        )

    with Session(engine) as s:
        exposition = fleet_metrics(s, SCRAPED_AT)
        types, samples = parse(exposition)
        live = s.scalar(
            select(func.count())
            .select_from(CentralMember)
            .where(
                CentralMember.tier != "unknown",
                CentralMember.deleted.is_(False),
                CentralMember.merged_into.is_(None),
            )
        )
        open_alerts: dict[str, int] = defaultdict(int)
        for (kind,) in s.execute(select(Alert.kind).where(Alert.cleared_at.is_(None))):
            open_alerts[kind] += 1
        members_balances = sum(balances(s).values())
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert types == {
        "hq_devices": "gauge",
        "hq_device_outbox_events": "gauge",
        "hq_device_outbox_events_max": "gauge",
        "hq_alerts_open": "gauge",
        "hq_events_stored_total": "counter",
        "hq_events_quarantined_total": "counter",
        "hq_members": "gauge",
        "hq_points_outstanding": "gauge",
        "hq_last_event_stored_age_seconds": "gauge",
    }
    by_role_state = {
        dict(labels)["role"] + "/" + dict(labels)["state"]: value
        for (name, labels), value in samples.items()
        if name == "hq_devices"
    }
    assert by_role_state == {
        "kiosk/offline": 1, "kiosk/online": 2, "lane/online": 1, 'la"ne\\x\ny/unknown': 1,
    }  # fmt: skip
    assert samples[("hq_device_outbox_events", ())] == 3 + 0 + 250 + 7
    assert samples[("hq_device_outbox_events_max", ())] == 250
    assert {
        dict(labels)["kind"]: value
        for (name, labels), value in samples.items()
        if name == "hq_alerts_open"
    } == open_alerts
    assert open_alerts["gift_low_stock"] == 2 and "printer_paper_out" not in open_alerts
    stored = sum(len(events) for events in chain.events.values())
    assert samples[("hq_events_stored_total", ())] == stored
    assert samples[("hq_events_quarantined_total", ())] == 1
    assert live is not None and samples[("hq_members", ())] == live > 0
    assert samples[("hq_points_outstanding", ())] == members_balances != 0
    assert samples[("hq_last_event_stored_age_seconds", ())] == 42.5


def test_before_any_event_the_age_has_no_sample(engine):
    with Session(engine) as s:
        types, samples = parse(fleet_metrics(s, SCRAPED_AT))
    assert types["hq_last_event_stored_age_seconds"] == "gauge"
    assert not any(name == "hq_last_event_stored_age_seconds" for name, _ in samples)
    assert samples[("hq_events_stored_total", ())] == 0
    assert samples[("hq_members", ())] == 0
