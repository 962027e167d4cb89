"""HQ stores each device's events in outbox order, and no message can stop a service.

A broker restart can lose the first batches after a reconnect while a later one arrives:
HQ must not store that later one first (its fan-out would hand other stores an accrual
before the registration it belongs to), must say where to resend from, must refuse a
second event on a seq already taken, and must refuse entries a device has no business
sending. A replica that is handed an entry of a member it does not know yet waits for the
member instead of failing, and the agent goes on whatever a message holds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import (
    CATALOGUE_SIGNING_DOMAIN,
    Catalogue,
    CatalogueGift,
    Event,
    EventAck,
    EventBatch,
    LanePurchaseResult,
    ProtocolError,
    ReplicaBatch,
    ReplicaEvent,
    Topics,
    decode,
)
from edge.protocol.link import Inbound, MqttLink
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Gift, OutboxEvent
from edge.storage.sync_models import SetAside
from edge.sync.agent import Agent, link_settings
from edge.sync.outbox import OutboxPump
from hq.commands import load_command_key, sign_message
from hq.ledger import CentralLedger, balances
from hq.models import Alert, QuarantinedEvent, StoredEvent
from hq.service import HqService
from tests.hq.database import HQ_VAULT, sqlite_hq_engine
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import arriving, client, local_balances, outbox_events

ids = IdFactory()
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def batch(device: str, *events: Event) -> EventBatch:
    return EventBatch(device_id=device, batch_id=ids.new(), events=list(events))


def kiosk_with_history(tmp_path: Path, broker, device: str, store: str, start: int):
    """A kiosk whose outbox holds a registration (seq 1) and an accrual (seq 2)."""
    app = open_app(make_data_dir(tmp_path, broker, device, store, start))
    reg = register_member(app, "13900139000", consent=True)
    accrue_purchase(app, reg.card_no, 12_300, "R-ORDER-1")
    events = outbox_events(app)
    kinds = [e.kind for e in events]
    assert kinds[:1] == ["member.registered"] and "points.accrued" in kinds, kinds
    return app, reg, events


@pytest.fixture
def hq_db(tmp_path):
    engine = sqlite_hq_engine(tmp_path / "hq.db")
    yield engine
    engine.dispose()


def ingest(engine, device: str, b: EventBatch):
    with Session(engine) as s, s.begin():
        return CentralLedger(timedelta(minutes=10), HQ_VAULT).ingest(s, device, b, NOW)


def stored_order(engine, device: str) -> list[int]:
    with Session(engine) as s:
        return list(
            s.scalars(
                select(StoredEvent.device_seq)
                .where(StoredEvent.device_id == device)
                .order_by(StoredEvent.hq_seq)
            )
        )


# --------------------------------------------------------------------------- HQ's ingest


def test_an_event_past_the_next_seq_waits_for_the_ones_before_it(tmp_path, broker, hq_db):
    app, reg, events = kiosk_with_history(tmp_path, broker, "K002", "S002", 50_000)
    first, later = events[0], events[-1]
    early = ingest(hq_db, "K002", batch("K002", later))
    assert early.acked == [] and early.stored == []
    assert early.gap and early.expect_seq == 1
    assert stored_order(hq_db, "K002") == []

    everything = ingest(hq_db, "K002", batch("K002", *reversed(events)))
    assert everything.expect_seq is None
    assert set(everything.acked) == {e.event_id for e in events}
    assert stored_order(hq_db, "K002") == [e.seq for e in events]
    with Session(hq_db) as s:
        assert balances(s)[reg.member_id] == 123
    again = ingest(hq_db, "K002", batch("K002", first))
    assert again.acked == [first.event_id] and again.stored == []
    app.close()


def test_a_second_event_on_a_seq_already_taken_is_refused_and_alerted(tmp_path, broker, hq_db):
    app, reg, events = kiosk_with_history(tmp_path, broker, "K002", "S002", 50_000)
    ingest(hq_db, "K002", batch("K002", *events))
    accrual = next(e for e in events if e.kind == "points.accrued")
    clone = accrual.model_copy(update={"event_id": ids.new()})
    result = ingest(hq_db, "K002", batch("K002", clone))
    assert result.stored == [] and result.acked == []
    assert [q[0] for q in result.quarantined] == [clone.event_id]
    assert "already taken" in result.quarantined[0][1]
    assert result.expect_seq == len(events) + 1
    with Session(hq_db) as s:
        assert s.scalar(select(func.count()).select_from(StoredEvent)) == len(events)
        assert balances(s)[reg.member_id] == 123
        alerts = list(s.scalars(select(Alert.kind).where(Alert.device_id == "K002")))
    assert "event_seq_conflict" in alerts
    # Sent again, it is answered from the quarantine, not raised twice.
    repeat = ingest(hq_db, "K002", batch("K002", clone))
    assert [q[0] for q in repeat.quarantined] == [clone.event_id]
    app.close()


def test_entries_of_another_device_or_store_are_refused(tmp_path, broker, hq_db):
    app, reg, events = kiosk_with_history(tmp_path, broker, "K001", "S001", 1)
    ingest(hq_db, "K001", batch("K001", *events))
    accrual = next(e for e in events if e.kind == "points.accrued")
    entry = dict(accrual.data["entries"][0])
    entry.update(id=ids.new(), device_id="K002", store_id="S002", points=777, lot_id=ids.new())
    forged = Event(
        event_id=ids.new(),
        kind="points.accrued",
        store_id="S001",
        device_id="K001",
        at=NOW,
        seq=len(events) + 1,
        data={"member_id": reg.member_id, "card_no": reg.card_no, "entries": [entry]},
    )
    result = ingest(hq_db, "K001", batch("K001", forged))
    assert result.stored == []
    assert "entry" in result.quarantined[0][1] and "K002" in result.quarantined[0][1]
    # The envelope of another store from a device HQ knows at S001 is refused too.
    with Session(hq_db) as s, s.begin():
        HqService._seen(s, {"K001": "S001"}, NOW)
    moved = accrual.model_copy(
        update={"event_id": ids.new(), "seq": len(events) + 2, "store_id": "S002"}
    )
    result = ingest(hq_db, "K001", batch("K001", moved))
    assert result.stored == [] and "store S002" in result.quarantined[0][1]
    with Session(hq_db) as s:
        assert balances(s)[reg.member_id] == 123
        assert s.scalar(select(func.count()).select_from(QuarantinedEvent)) == 2
    # Quarantined events take their seqs: the device's next event is stored.
    nxt = accrual.model_copy(update={"event_id": ids.new(), "seq": len(events) + 3})
    assert ingest(hq_db, "K001", batch("K001", nxt)).stored
    app.close()


def test_numbers_in_quotes_are_a_wrong_type_on_the_wire(tmp_path, broker, hq_db):
    app, _reg, events = kiosk_with_history(tmp_path, broker, "K001", "S001", 1)
    body = json.loads(batch("K001", events[0]).to_bytes())
    body["events"][0]["seq"] = str(body["events"][0]["seq"])
    with pytest.raises(ProtocolError, match="seq"):
        decode(EventBatch, json.dumps(body).encode())
    for field, value in (("ok", "true"), ("points", 1.0)):
        reply = {"v": 1, "receipt_id": "R1", "ok": True, "points": 1}
        reply[field] = value
        with pytest.raises(ProtocolError):
            decode(LanePurchaseResult, json.dumps(reply).encode())
    # Inside an event's data as well: an entry's points in quotes is quarantined at HQ.
    accrual = next(e for e in events if e.kind == "points.accrued")
    data = json.loads(json.dumps(accrual.data))
    data["entries"][0]["points"] = str(data["entries"][0]["points"])
    quoted = accrual.model_copy(update={"data": data, "seq": 1})
    result = ingest(hq_db, "K001", batch("K001", quoted))
    assert result.stored == [] and "points" in result.quarantined[0][1]
    app.close()


# --------------------------------------------------------------------------- on a real broker


def wait_ack(link: MqttLink, batch_id: str, timeout: float = 20.0) -> EventAck:
    for item in arriving(link, timeout):
        ack = decode(EventAck, item.payload)
        if ack.batch_id == batch_id:
            return ack
    raise AssertionError(f"no ack for batch {batch_id}")


def test_a_replica_entry_before_its_member_waits_for_the_member(broker, tmp_path):
    """HQ's replica handing K001 an accrual before the registration (any order, repeats):
    the agent keeps running, the accrual waits, and applies when the member arrives."""
    source, reg, events = kiosk_with_history(tmp_path, broker, "K002", "S002", 50_000)
    k001 = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(k001)
    runner = Runner(agent.run)
    topics = Topics()
    hq_link = client(broker, "hq", client_id="hq-replica-test")
    hq_link.start()
    registration, rest = events[0], events[1:]
    try:
        wait_until(lambda: hq_link.connected and agent.link.connected, 20, "links up")

        def send(after: int, items: list[tuple[int, Event]]) -> None:
            message = ReplicaBatch(
                after_seq=after,
                to_seq=max(seq for seq, _ in items),
                events=[ReplicaEvent(hq_seq=seq, event=e) for seq, e in items],
                at=datetime.now(UTC),
                feed="store",
            )
            assert hq_link.publish(topics.replica("K001"), message.to_bytes(), qos=1)

        def waiting() -> int:
            with k001.db.read() as s:
                return int(s.scalar(select(func.count()).select_from(SetAside)) or 0)

        send(0, [(i + 1, e) for i, e in enumerate(rest)])
        wait_until(lambda: waiting() == len(rest), 20, "the accrual to wait for its member")
        assert agent.failed == 0
        send(len(rest), [(len(rest) + 1, registration)] * 2)  # and a repeat
        wait_until(lambda: waiting() == 0, 20, "the waiting accrual to apply")
    finally:
        hq_link.close()
        runner.stop()
    assert local_balances(k001)[reg.member_id] == 123
    report = verify_ledger(k001)
    assert report.ok, report.problems
    source.close()
    k001.close()


def test_the_outbox_goes_back_to_the_seq_hq_asks_for(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    for n in range(3):
        register_member(app, f"1390013900{n}", consent=True)
    total = len(outbox_events(app))
    topics = Topics(app.config.sync.topic_prefix)
    link = MqttLink(link_settings(app, topics))
    watcher = client(broker, "hq", [(topics.events("K002"), 1)], client_id="hq-watch")
    pump = OutboxPump(
        app, link, topics, batch_max=1, inflight_max=total, ack_timeout_s=600, retry_max_s=600
    )
    link.start()
    watcher.start()
    try:
        wait_until(lambda: link.connected and watcher.connected, 20, "links up")
        assert pump.pump() == total
        sent = [seq for seq in seqs_seen(watcher, total)]
        assert sent == list(range(1, total + 1))
        # HQ got 1 and 3 but not 2: its ack of 3 asks for 2, and the pump goes back at once.
        third = list(pump.inflight)[2]
        pump.on_ack(EventAck(batch_id=third, event_ids=[], expect_seq=2, at=datetime.now(UTC)))
        assert pump.pump() == total - 1
        assert seqs_seen(watcher, total - 1) == list(range(2, total + 1))
        # An ack of a batch from before the rewind does not rewind again.
        pump.on_ack(EventAck(batch_id=ids.new(), event_ids=[], expect_seq=2, at=NOW))
        assert pump.pump() == 0
    finally:
        watcher.close()
        link.close()
    app.close()


def seqs_seen(watcher: MqttLink, count: int) -> list[int]:
    seen: list[int] = []
    for item in arriving(watcher, 20):
        seen += [e.seq for e in decode(EventBatch, item.payload).events]
        if len(seen) >= count:
            break
    return seen


def test_a_message_that_fails_to_apply_is_set_aside_and_the_agent_goes_on(
    broker, tmp_path, monkeypatch
):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    catalogue = sign_message(
        load_command_key(broker.directory / "hq-command.key"),
        CATALOGUE_SIGNING_DOMAIN,
        Catalogue(
            version=3,
            issued_at=NOW,
            gifts=[CatalogueGift(sku="MUG", name="Mug", points_price=50)],
        ),
    )
    message = Inbound(Topics().catalogue(), catalogue.to_bytes(), qos=0, mid=0, retain=True)

    def failing(*args, **kwargs):
        raise RuntimeError("disk I/O error\nsecond line")

    monkeypatch.setattr("edge.sync.agent.apply_catalogue", failing)
    agent.handle(message)
    assert agent.failed == 1
    with app.db.read() as s:
        kept = list(s.scalars(select(SetAside)))
        alerts = list(
            s.scalars(select(OutboxEvent.payload).where(OutboxEvent.kind == "alert.device"))
        )
    assert [k.topic for k in kept] == [message.topic]
    assert "\n" not in kept[0].reason and "disk I/O error" in kept[0].reason
    assert any("message_set_aside" in a for a in alerts)

    monkeypatch.undo()
    agent._retry_set_aside()
    with app.db.read() as s:
        assert s.scalar(select(func.count()).select_from(SetAside)) == 0
        assert s.get(Gift, "MUG") is not None
    app.close()


def test_an_acknowledgement_finds_its_events_by_their_ids(broker, tmp_path):
    """Marking a batch delivered looks its events up by id, whatever the backlog: asked for
    "these ids, not yet delivered", SQLite would walk the index of every pending event for
    each acknowledgement, and a backlog's drain would slow down with its length."""
    app = open_app(make_data_dir(tmp_path, broker, "K003", "S003", 60_000))
    with app.db.write() as s:
        s.execute(
            insert(OutboxEvent),
            [
                {"event_id": ids.new(), "kind": "points.accrued", "payload": "{}",
                 "created_at": NOW, "attempts": 0}
                for _ in range(3000)
            ],
        )  # fmt: skip
        acked = list(s.scalars(select(OutboxEvent.event_id).order_by(OutboxEvent.seq)))[:500]
    topics = Topics(app.config.sync.topic_prefix)
    pump = OutboxPump(
        app, MqttLink(link_settings(app, topics)), topics,
        batch_max=500, inflight_max=16, ack_timeout_s=60, retry_max_s=60,
    )  # fmt: skip
    statements: list[tuple[str, Any]] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if "outbox" in statement and not statement.lstrip().upper().startswith("EXPLAIN"):
            statements.append((statement, parameters))

    event.listen(app.db.engine, "before_cursor_execute", seen)
    try:
        marked = pump.on_ack(EventAck(event_ids=[*acked, acked[0]], at=NOW))
    finally:
        event.remove(app.db.engine, "before_cursor_execute", seen)
    assert marked == 500
    with app.db.read() as s:
        delivered = set(s.scalars(select(OutboxEvent.event_id).where(
            OutboxEvent.delivered_at.is_not(None))))  # fmt: skip
        assert delivered == set(acked)
        assert statements
        for statement, parameters in statements:
            plan = " ".join(
                str(row[-1])
                for row in s.connection().exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters
                )
            )
            assert "ix_outbox_pending" not in plan and "SCAN" not in plan, (statement, plan)
    app.close()
