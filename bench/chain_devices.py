"""The chain simulation's devices: kiosks and lanes that speak the real protocol.

A simulated kiosk publishes its purchases as an outbox does (events in seq order, one batch
in flight, resent until HQ acknowledges, going back to the seq HQ asks for), follows its
store's replica feed with a cursor (asking HQ again on a gap), and fetches a member of
another store with an MQTT 5 request before its first purchase there. A simulated lane
listens to HQ's blocklist and its store's card list, and notes when a watched card arrives.

Each process runs a :class:`~bench.swarm.Swarm` of such devices and takes its orders from
the simulation through a pipe (:func:`serve`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.swarm import Swarm, raise_fd_limit
from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch, MemberFetch, ReplicaRequest, Topics

ACK_TIMEOUT_S = 5.0
BATCH_MAX = 500
T = Topics()


@dataclass
class KioskSpec:
    device: str
    store: str
    cursor: int
    home: list[tuple[str, str]]  # (member id, card no)


@dataclass
class Stats:
    emitted: int = 0
    acked: int = 0
    ack_s: list[float] = field(default_factory=list)
    replica_msgs: dict[str, int] = field(default_factory=dict)
    replica_items: dict[str, int] = field(default_factory=dict)
    gap_requests: int = 0
    fetch_s: list[float] = field(default_factory=list)
    fetch_missing: int = 0
    resends: int = 0


class SimKiosk:
    def __init__(
        self, swarm: Swarm, spec: KioskSpec, visitors: list[tuple[str, str]], stats: Stats
    ) -> None:
        self.swarm, self.spec, self.visitors, self.stats = swarm, spec, visitors, stats
        self.ids = IdFactory()
        self.rng = random.Random(spec.device)
        self.seq = 0
        self.unacked: list[Event] = []
        self.born: dict[str, float] = {}
        self.inflight: str | None = None
        self.cursor = spec.cursor
        self.held = {m for m, _ in spec.home}
        self.asked: dict[bytes, tuple[float, str, str]] = {}
        self.rate = 0.0
        self.away = 0.0
        self.client = swarm.add(spec.device, self._connected, self._message)

    # ------------------------------------------------------------------ the link

    def _connected(self, client: mqtt.Client) -> None:
        me = self.spec.device
        client.subscribe([(T.ack(me), 1), (T.replica(me), 1), (T.member(me), 1)])
        self._ask_feed()
        self.inflight = None
        self._send()

    def _ask_feed(self) -> None:
        request = ReplicaRequest(
            device_id=self.spec.device,
            store_id=self.spec.store,
            after_seq=self.cursor,
            feed="store",
        )
        self.client.publish(T.replica_request(self.spec.device), request.to_bytes(), qos=1)

    def _message(self, _client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        body = json.loads(msg.payload)
        if leaf == "ack":
            self._acked(body)
        elif leaf == "replica":
            me = self.spec.device
            self.stats.replica_msgs[me] = self.stats.replica_msgs.get(me, 0) + 1
            self.stats.replica_items[me] = self.stats.replica_items.get(me, 0) + len(body["events"])
            if body["after_seq"] > self.cursor:
                self.stats.gap_requests += 1
                self._ask_feed()
            elif body["to_seq"] > self.cursor:
                self.cursor = body["to_seq"]
        elif leaf == "member":
            correlation = getattr(msg.properties, "CorrelationData", None)
            asked = self.asked.pop(bytes(correlation), None) if correlation else None
            if asked is None:
                return
            started, member_id, card_no = asked
            self.stats.fetch_s.append(time.monotonic() - started)
            if body["found"]:
                self.held.add(member_id)
                self._purchase(member_id, card_no)
            else:
                self.stats.fetch_missing += 1

    def _acked(self, ack: dict[str, Any]) -> None:
        done = set(ack["event_ids"]) | {q["event_id"] for q in ack.get("quarantined", [])}
        expect = ack.get("expect_seq")
        now = time.monotonic()
        kept = []
        for event in self.unacked:
            if event.event_id in done or (expect is not None and event.seq < expect):
                self.stats.acked += 1
                born = self.born.pop(event.event_id, None)
                if born is not None and event.event_id in done:
                    self.stats.ack_s.append(now - born)
            else:
                kept.append(event)
        self.unacked = kept
        # Only the ack of the batch in flight moves on (as the agent does): acks of
        # earlier sends must not make it go back again and again.
        if ack.get("batch_id") == self.inflight:
            self.inflight = None
            self._send()

    def _send(self) -> None:
        if self.inflight is not None or not self.unacked or not self.client.is_connected():
            return
        batch = EventBatch(
            device_id=self.spec.device, batch_id=self.ids.new(), events=self.unacked[:BATCH_MAX]
        )
        self.inflight = batch.batch_id
        self.client.publish(T.events(self.spec.device), batch.to_bytes(), qos=1)
        sent = batch.batch_id

        def check() -> None:
            if self.inflight == sent:
                self.stats.resends += 1
                self.inflight = None
                self._send()

        self.swarm.later(ACK_TIMEOUT_S, check)

    # ------------------------------------------------------------------ the store's day

    def start(self, rate_per_s: float, away: float) -> None:
        self.rate, self.away = rate_per_s, away
        if rate_per_s > 0:
            self.swarm.later(self.rng.expovariate(rate_per_s), self._tick)

    def stop(self) -> None:
        self.rate = 0.0

    def _tick(self) -> None:
        if self.rate <= 0:
            return
        if self.visitors and self.rng.random() < self.away:
            member_id, card_no = self.rng.choice(self.visitors)
        else:
            member_id, card_no = self.rng.choice(self.spec.home)
        if member_id in self.held:
            self._purchase(member_id, card_no)
        elif self.client.is_connected():
            self._fetch(member_id, card_no)
        self.swarm.later(self.rng.expovariate(self.rate), self._tick)

    def _fetch(self, member_id: str, card_no: str) -> None:
        me = self.spec.device
        correlation = self.rng.randbytes(16)
        self.asked[correlation] = (time.monotonic(), member_id, card_no)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = T.member(me)
        props.CorrelationData = correlation
        request = MemberFetch(device_id=me, store_id=self.spec.store, card_no=card_no)
        self.client.publish(T.member_fetch(me), request.to_bytes(), qos=1, properties=props)

    def _purchase(self, member_id: str, card_no: str) -> None:
        now = datetime.now(UTC)
        points = self.rng.randrange(1, 300)
        receipt = f"{self.spec.device}-{self.seq + 1}"
        entry = {
            "id": self.ids.new(),
            "member_id": member_id,
            "kind": "purchase",
            "points": points,
            "lot_id": self.ids.new(),
            "ref": receipt,
            "at": now.isoformat(),
            "store_id": self.spec.store,
            "device_id": self.spec.device,
            "expires_at": (now + timedelta(days=365)).isoformat(),
            "available_at": now.isoformat(),
        }
        data = {
            "member_id": member_id,
            "card_no": card_no,
            "entries": [entry],
            "receipt_id": receipt,
            "amount_cents": points * 100,
        }
        self._emit("points.accrued", data, now)

    def _emit(self, kind: str, data: dict[str, Any], at: datetime) -> None:
        self.seq += 1
        event = Event(
            event_id=self.ids.new(),
            kind=kind,
            store_id=self.spec.store,
            device_id=self.spec.device,
            at=at,
            data=data,
            seq=self.seq,
        )
        self.unacked.append(event)
        self.born[event.event_id] = time.monotonic()
        self.stats.emitted += 1
        self._send()


class SimLane:
    """A till's card list: HQ's blocklist and its store's card changes."""

    def __init__(
        self, swarm: Swarm, lane: str, store: str, seen: dict[str, dict[str, float]]
    ) -> None:
        self.lane, self.store, self.seen = lane, store, seen
        self.client = swarm.add(lane, self._connected, self._message)

    def _connected(self, client: mqtt.Client) -> None:
        client.subscribe([(T.blocklist(), 1), (T.lane_cards(self.store), 1)])

    def _message(self, _client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.endswith("/blocklist"):
            cards = body.get("add", [])
        else:
            cards = [c["card_no"] for c in body.get("cards", []) if c["state"] != "active"]
        now = time.monotonic()
        for card in cards:
            if card in self.seen:
                self.seen[card].setdefault(self.lane, now)  # its first refusal from now on


def serve(
    conn: Connection,
    host: str,
    port: int,
    tls_dir: Path,
    kiosks: list[KioskSpec],
    visitors: list[tuple[str, str]],
    lanes: list[tuple[str, str]],
) -> None:
    """One process of devices; orders from the pipe: ``("load", rate, away)``, ``("stop",)``,
    ``("settle",)`` (until every event is acknowledged), ``("watch", card)``,
    ``("report",)``, ``("quit",)``. Answers ``ready`` once every device is connected."""
    raise_fd_limit()
    swarm = Swarm(host, port, tls_dir)
    stats = Stats()
    seen: dict[str, dict[str, float]] = {}
    devices = [SimKiosk(swarm, spec, visitors, stats) for spec in kiosks]
    for lane, store in lanes:
        SimLane(swarm, lane, store, seen)
    total = len(swarm.clients)
    swarm.run(lambda: swarm.connected() == total)
    conn.send(("ready", total))
    settling = False
    while True:
        swarm.step(0.02)
        if settling and all(not d.unacked for d in devices):
            settling = False
            conn.send(("settled", stats.emitted))
        if not conn.poll(0):
            continue
        order = conn.recv()
        if order[0] == "load":
            for device in devices:
                device.start(order[1], order[2])
        elif order[0] == "stop":
            for device in devices:
                device.stop()
        elif order[0] == "settle":
            settling = True
        elif order[0] == "watch":
            seen[order[1]] = {}
        elif order[0] == "reset":
            stats = Stats()
            for device in devices:
                device.stats = stats
        elif order[0] == "report":
            conn.send(
                (
                    "report",
                    {
                        "stats": stats.__dict__,
                        "seen": {c: max(t.values()) for c, t in seen.items() if t},
                        "seen_count": {c: len(t) for c, t in seen.items()},
                        "unacked": sum(len(d.unacked) for d in devices),
                        "connected": swarm.connected(),
                        "reconnects": swarm.reconnects,
                    },
                )
            )
        elif order[0] == "quit":
            for client in swarm.clients:
                client.disconnect()
            for _ in range(20):
                swarm.step(0.01)
            return
