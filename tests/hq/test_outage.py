"""HQ's database restarting under it: nothing is quarantined, nothing is lost, the service
goes on and stores what the devices send again."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, Topics
from edge.protocol.link import Inbound
from hq.models import QuarantinedEvent, StoredEvent
from hq.service import HqConfig, HqService
from tests.hq.database import hq_data_key_file, migrated_engine
from tests.postgres import fresh_schema, postgres_cluster

ids = IdFactory()
T = Topics()


def registration(seq: int) -> Event:
    member = ids.new()
    return Event(
        event_id=ids.new(),
        kind="member.registered",
        store_id="S001",
        device_id="K001",
        at=datetime.now(UTC),
        data={
            "member_id": member,
            "card_no": f"29000000{seq:05d}",
            "tier": "normal",
            "consent_version": "2026-01",
            "entries": [],
        },
        seq=seq,
    )


def message(*events: Event) -> Inbound:
    batch = EventBatch(device_id="K001", batch_id=ids.new(), events=list(events))
    return Inbound(T.events("K001"), batch.to_bytes(), 1, 1, False)


def counts(engine) -> tuple[int, int]:
    with Session(engine) as s:
        stored = s.scalar(select(func.count()).select_from(StoredEvent)) or 0
        set_aside = s.scalar(select(func.count()).select_from(QuarantinedEvent)) or 0
        return int(stored), int(set_aside)


def test_a_database_restart_quarantines_nothing_and_the_resend_is_stored():
    with postgres_cluster(durable=True) as cluster, fresh_schema(cluster.url) as url:
        engine = migrated_engine(url)
        hq = HqService(
            HqConfig(database_url=url, client_id="hq-outage", data_key_file=hq_data_key_file()),
            engine,
        )
        hq.handle(message(registration(1)))
        assert counts(engine) == (1, 0)
        cluster.stop("immediate")
        failed = hq.counters.failed
        second = message(registration(2), registration(3))
        hq.handle(second)  # logged and counted; the service goes on
        assert hq.counters.failed == failed + 1
        cluster.start()
        assert counts(engine) == (1, 0)  # nothing stored, nothing set aside
        hq.handle(second)  # the device sends it again
        assert counts(engine) == (3, 0)
        engine.dispose()
