"""Thousands of malformed and hostile messages on every subscribed topic: no crash, no change.

Each hostile message is made invalid on purpose (random bytes, broken JSON, a valid message
with a field removed, an unknown field added, a wrong type, another version, an expired
command or blocklist), so "nothing applied" is exact. Valid traffic afterwards still works:
the agent and HQ survived.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol import (
    BlocklistUpdate,
    Catalogue,
    CatalogueGift,
    CouponCheck,
    Event,
    EventAck,
    EventBatch,
    LanePurchase,
    MemberFetch,
    MemberFetchResult,
    OfflineRules,
    PointsRules,
    ReplicaBatch,
    ReplicaEvent,
    ReplicaRequest,
    Rules,
    Telemetry,
    Topics,
)
from edge.services.members import register_member
from edge.storage.models import AuditRecord, Card, Gift, LedgerEntry, Member, OutboxEvent, Purchase
from edge.storage.sync_models import InboundMessage
from edge.sync.agent import Agent
from hq.commands import load_command_key, sign_command
from hq.models import Alert, CentralEntry, QuarantinedEvent, StoredEvent
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import client, hq_config, pending

T = Topics()
NOW = datetime.now(UTC)
ULID = "01J0000000000000000000000A"


def samples(key) -> dict[str, bytes]:
    """One valid message per subscribed topic (the fuzzer breaks each of them)."""
    event = Event(
        event_id=ULID,
        kind="points.accrued",
        store_id="S001",
        device_id="K002",
        at=NOW,
        data={"member_id": ULID, "entries": [], "card_no": "1000000001"},
        seq=1,
    )
    cmd = sign_command(key, "K001", "ping")
    return {
        T.ack("K001"): EventAck(event_ids=[ULID], at=NOW).to_bytes(),
        T.replica("K001"): ReplicaBatch(
            after_seq=0,
            to_seq=1,
            events=[ReplicaEvent(hq_seq=1, event=event)],
            at=NOW,
            feed="store",
        ).to_bytes(),
        T.member("K001"): MemberFetchResult(found=False, at=NOW).to_bytes(),
        T.command("K001"): cmd.to_bytes(),
        T.blocklist(): BlocklistUpdate(
            update_id="u1", add=["1000000001"], issued_at=NOW, expires_at=NOW + timedelta(days=1)
        ).to_bytes(),
        T.catalogue(): Catalogue(
            version=5, issued_at=NOW, gifts=[CatalogueGift(sku="CUP", name="Cup", points_price=9)]
        ).to_bytes(),
        T.rules(): Rules(
            version=9,
            issued_at=NOW,
            points=PointsRules(
                points_per_yuan=9,
                expiry_months=1,
                pending_days=0,
                checkin_points=1,
                birthday_bonus_points=1,
                referral_bonus_points=1,
            ),
            offline=OfflineRules(
                offline_after_s=10,
                max_points_per_redemption=1,
                max_points_per_member=1,
                max_points_per_device=1,
                max_offline_hours=1,
            ),
        ).to_bytes(),
        T.lane_purchase("S001", "L1"): LanePurchase(
            receipt_id="R1", lane_id="L1", card_no="1000000001", amount_cents=100, at=NOW
        ).to_bytes(),
        T.lane_coupon("S001", "L1"): CouponCheck(
            transaction="t1", lane_id="L1", code="X"
        ).to_bytes(),
        # HQ's side
        T.events("K001"): EventBatch(device_id="K001", batch_id=ULID, events=[event]).to_bytes(),
        T.replica_request("K001"): ReplicaRequest(
            device_id="K001", store_id="S001", after_seq=0, feed="store"
        ).to_bytes(),
        T.member_fetch("K001"): MemberFetch(
            device_id="K001", store_id="S001", card_no="1000000001"
        ).to_bytes(),
        T.telemetry("K001"): Telemetry(
            device_id="K001", store_id="S001", at=NOW, version="x", uptime_s=1, outbox_depth=0
        ).to_bytes(),
    }


def _break(rng: random.Random, value, depth=0):
    """A copy of a JSON value with one guaranteed schema violation somewhere inside."""
    # An event's ``data`` is free-form by design (checked per kind later): mutate around it.
    nested = sorted(k for k in value if k != "data") if isinstance(value, dict) else []
    if nested and depth < 3 and rng.random() < 0.5:
        key = rng.choice(nested)
        inner = value[key]
        if isinstance(inner, dict | list) and inner:
            return {**value, key: _break(rng, inner, depth + 1)}
    if isinstance(value, dict):
        choice = rng.randrange(4)
        if choice == 0 and nested:
            return {**value, rng.choice(nested): {"$bad": [1, None]}}  # a wrong type
        if choice == 1:
            return {**value, "injected": "1; DROP TABLE member"}
        if choice == 2 and "v" in value:
            return {**value, "v": rng.choice([0, 2, "1", None, 1.5])}
        return {**value, "injected_" + str(rng.randrange(9)): [1, {"$ne": None}]}
    if isinstance(value, list):
        return [_break(rng, value[0], depth + 1)] if value else [{"bad": True}]
    return {"unexpected": value}


def hostile(rng: random.Random, valid: bytes) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        return valid[: rng.randrange(1, max(2, len(valid) - 1))]  # truncated JSON
    if kind == 2:
        return b"[" * 5000 + b"]" * 5000  # deep nesting
    if kind == 3:
        return json.dumps(rng.choice([None, 1, "x", [], True])).encode()
    if kind == 4:
        return valid.replace(b'"', b"'", 3)
    return json.dumps(_break(rng, json.loads(valid))).encode()


def _counts(app):
    with app.db.read() as s:
        return {
            m.__name__: s.scalar(select(func.count()).select_from(m))
            for m in (Member, Card, LedgerEntry, Purchase, Gift, InboundMessage, OutboxEvent)
        }


def test_hostile_messages_are_dropped_and_nothing_is_applied(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    hq = HqService(hq_config(broker, tmp_path))
    agent = Agent(app)
    runners = [Runner(hq.run), Runner(agent.run)]
    attacker = client(broker, "hq", client_id="hq-fuzzer")
    attacker.start()
    rng = random.Random(1234)
    try:
        # connected and subscribed: a message published before a subscription is in force
        # reaches nobody, and would never be counted
        assert attacker.wait_connected(10) and agent.link.wait_connected(10)
        assert hq.link.wait_connected(10)
        wait_until(lambda: pending(app) == 0, 10, "start-up")
        before = _counts(app)
        with app.db.read() as s:
            audit_before = s.scalar(select(func.count()).select_from(AuditRecord))
        valid = samples(load_command_key(broker.directory / "hq-command.key"))

        def handled() -> int:
            return agent.applied + agent.dropped + hq.counters.handled

        base = handled()

        def reached(count: int) -> Callable[[], bool]:
            return lambda: handled() - base >= count

        sent = 0
        for _ in range(300):
            for topic, message in valid.items():
                if attacker.publish(topic, hostile(rng, message), qos=1):
                    sent += 1
            # Pace the attack so the broker's per-client queue limit does not drop any.
            wait_until(reached(sent - 20), 30, "the fuzz to be handled")
        assert sent >= 3000

        def tally() -> str:
            warnings = [
                line
                for line in broker.log.read_text(errors="replace").splitlines()
                if "drop" in line.lower() or "warning" in line.lower()
            ]
            return (
                f"{sent} sent; agent applied {agent.applied}, dropped {agent.dropped}, failed "
                f"{agent.failed}, held {len(agent._held)}; HQ handled {hq.counters.handled}, "
                f"dropped {hq.counters.dropped}, failed {hq.counters.failed}; the broker's "
                f"warnings: {warnings[-5:]}"
            )

        try:
            wait_until(lambda: agent.dropped + hq.counters.dropped >= sent, 120, "all dropped")
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({tally()})") from None
        # Expired but otherwise valid: a blocklist update and a signed command.
        old = NOW - timedelta(days=2)
        late_block = BlocklistUpdate(
            update_id="late", add=["1000000001"], issued_at=old, expires_at=old
        ).to_bytes()
        key = load_command_key(broker.directory / "hq-command.key")
        late_command = sign_command(key, "K001", "block_card", {"card_no": "1000000001"}, now=old)
        applied = agent.applied
        assert attacker.publish(T.blocklist(), late_block, qos=1)
        assert attacker.publish(T.command("K001"), late_command.to_bytes(), qos=1)
        wait_until(lambda: agent.applied >= applied + 2, 30, "the expired messages")
        assert all(r.thread.is_alive() for r in runners)
        assert _counts(app) == before
        with app.db.read() as s:
            assert s.scalar(select(func.count()).select_from(AuditRecord)) == audit_before
        with Session(hq.engine) as s:
            assert s.scalar(select(func.count()).select_from(StoredEvent)) == 0
            assert s.scalar(select(func.count()).select_from(CentralEntry)) == 0
            assert s.scalar(select(func.count()).select_from(QuarantinedEvent)) == 0
            assert s.scalar(select(func.count()).select_from(Alert)) == 0
        # Both still serve valid traffic.
        reg = register_member(app, "13800000001", consent=True)
        wait_until(lambda: pending(app) == 0, 20, "a valid event to be acknowledged")
        with Session(hq.engine) as s:
            assert (s.scalar(select(func.count()).select_from(StoredEvent)) or 0) >= 1
        assert reg.card_no
    finally:
        attacker.close()
        for r in reversed(runners):
            r.stop()
        app.close()
