"""Offline backlog drain: N outbox events to HQ through a real Mosquitto (TLS), acknowledged.

Prints, from one run on the same broker: the raw paho QoS 1 publish rate of messages the
size of one event, and the time ``kiosk agent`` takes to publish the backlog and have every
event acknowledged by HQ (``kiosk hq serve``, separate processes), with HQ on SQLite and on
PostgreSQL.

    .venv/bin/python -m bench.drain [--events 100000]

The backlog starts with real purchases through the services (200 members) and is topped up
with copies of those events under new ids, on a RAM disk; the database is then copied to
disk, so the drain itself runs on the real storage. HQ applies every one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, insert, select

from edge.progress import Progress
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.storage.models import OutboxEvent
from hq.schema import upgrade
from hq.service import make_hq_engine
from tests.postgres import fresh_schema, postgres_cluster
from tests.sync.conftest import make_data_dir, open_app, start_broker
from tests.sync.helpers import AgentProcess, HqProcess

ROOT = Path(__file__).resolve().parents[1]


def make_backlog(data: Path, events: int, real: int = 2000) -> int:
    """``real`` purchases through the services, then copies of their events (new event,
    entry and lot ids, new receipt ids) up to ``events``: the accrual service costs ~12 ms
    a call here, and the drain does not care how the rows got into the outbox."""
    app = open_app(data)
    cards = [register_member(app, f"1360000{m:04d}", consent=True).card_no for m in range(200)]
    for n in range(real):
        accrue_purchase(app, cards[n % len(cards)], 1000 + n % 5000, f"B-{n}")
    with app.db.write() as s:
        samples = [
            json.loads(p)
            for p in s.scalars(
                select(OutboxEvent.payload).where(OutboxEvent.kind == "points.accrued")
            )
        ]
        total = s.scalar(select(func.count()).select_from(OutboxEvent)) or 0
        now = app.clock()
        rows = []
        for n in range(events - total):
            body = json.loads(json.dumps(samples[n % len(samples)]))
            body["event_id"] = app.ids.new()
            body["data"]["receipt_id"] = f"C-{n}"
            for entry in body["data"]["entries"]:
                entry["id"], entry["lot_id"] = app.ids.new(), app.ids.new()
                entry["ref"] = f"C-{n}"
            rows.append(
                {
                    "event_id": body["event_id"],
                    "kind": body["kind"],
                    "payload": json.dumps(body, sort_keys=True),
                    "created_at": now,
                    "attempts": 0,
                }
            )
        s.execute(insert(OutboxEvent), rows)
        total = s.scalar(select(func.count()).select_from(OutboxEvent)) or 0
    app.close()
    return int(total)


def raw_paho_rate(broker, count: int, size: int) -> float:
    ca, cert, key = broker.tls("hq")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.tls_set(str(ca), str(cert), str(key))
    client.max_inflight_messages_set(100)  # Mosquitto's max_inflight_messages in our config
    acked = threading.Event()
    done = [0]

    def on_publish(c: object, u: object, mid: int, rc: object, props: object) -> None:
        done[0] += 1
        if done[0] >= count:
            acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    time.sleep(0.5)
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        client.publish("mck/v1/device/hq/telemetry", payload, qos=1)
    if not acked.wait(300):
        raise TimeoutError(f"only {done[0]} of {count} raw publishes acknowledged in 300 s")
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    return count / elapsed


def drain(broker, backlog: Path, work: Path, db_url: str, total: int, limit: float) -> float:
    """Seconds for ``kiosk agent`` to drain a copy of ``backlog`` to ``kiosk hq serve`` on
    ``db_url`` (migrated first), every event acknowledged; with a progress bar."""
    engine = make_hq_engine(db_url)
    upgrade(engine)
    engine.dispose()
    data = work / "K001"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(backlog, data)
    log = work / "hq.log"
    hq = HqProcess(broker, db_url, log)
    hq.start()
    app = open_app(data)
    agent = AgentProcess(data)
    try:
        time.sleep(2.0)  # HQ connects and subscribes before the first publish
        start = time.perf_counter()
        agent.start()
        with Progress("  draining", total, "events") as bar:
            left = total
            while left:
                with app.db.read() as s:
                    left = int(
                        s.scalar(
                            select(func.count())
                            .select_from(OutboxEvent)
                            .where(OutboxEvent.delivered_at.is_(None))
                        )
                        or 0
                    )
                bar.advance(total - left - bar.done)
                if left and time.perf_counter() - start > limit:
                    raise TimeoutError(
                        f"{left} events still pending after {limit:.0f} s; HQ's log ends:\n"
                        + log.read_text()[-3000:]
                    )
                time.sleep(0.2)
        return time.perf_counter() - start
    finally:
        agent.stop()
        hq.stop()
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--limit", type=float, default=600, help="seconds before giving up")
    parser.add_argument("--engines", default="sqlite,postgresql", help="HQ's databases to try")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drain-bench-"))
    ram = Path(
        tempfile.mkdtemp(
            prefix="drain-backlog-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )
    broker = start_broker(work / "broker", max_queued=1000)
    try:
        print(f"making a backlog of {args.events} events with the real services ...", flush=True)
        t0 = time.perf_counter()
        backlog = make_data_dir(ram, broker, "K001", "S001", 1)
        total = make_backlog(backlog, args.events)
        print(f"  {total} events in {time.perf_counter() - t0:.0f} s")
        with open_app(backlog).db.read() as s:
            size = int(s.scalar(select(func.avg(func.length(OutboxEvent.payload)))) or 500)
        raw_count = min(total, 20_000)
        # The best of three runs: the machine's load moves a single run by half.
        rates = [raw_paho_rate(broker, raw_count, size) for _ in range(3)]
        rate = max(rates)
        print(
            f"raw paho QoS 1 publish, {raw_count} messages of {size} bytes (one event each), "
            f"best of {', '.join(f'{r:,.0f}' for r in rates)} msg/s: {rate:,.0f} msg/s, i.e. "
            f"{total / rate:.1f} s for {total} one by one"
        )
        seconds = {}
        engines = args.engines.split(",")
        if "sqlite" in engines:
            print("HQ on SQLite")
            seconds["SQLite"] = drain(
                broker, backlog, work, f"sqlite+pysqlite:///{work / 'hq.db'}", total, args.limit
            )
        if "postgresql" in engines:
            print("HQ on PostgreSQL (its own cluster, every commit flushed)")
            with postgres_cluster(durable=True) as cluster, fresh_schema(cluster.url) as url:
                seconds["PostgreSQL"] = drain(broker, backlog, work, url, total, args.limit)
        for engine, took in seconds.items():
            print(
                f"drain to HQ on {engine}: {total} events published, stored and acknowledged in "
                f"{took:.1f} s ({total / took:,.0f} events/s), {(total / took) / rate:.2f} of "
                "raw paho"
            )
        return 0
    finally:
        broker.stop()
        shutil.rmtree(ram, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
