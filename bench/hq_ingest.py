"""HQ's ingest on PostgreSQL with 1, 2 and 4 worker processes, against plain INSERTs.

    .venv/bin/python -m bench.hq_ingest [--devices 200] [--events-per-device 200] [--batch 50]

A throwaway PostgreSQL cluster (as the tests start one) holds a fresh, migrated schema for
each run. The devices' outboxes are made first: each device registers members and accrues
points for members of every store, the events cut into batches of ``--batch``. Each device
has one batch in flight at a time, as a device waiting for HQ's acknowledgement does; worker
processes (each an :class:`~hq.service.HqService` with its own engine, storing through the
same method the MQTT handler uses) take whichever batch is ready. Printed beside them, in
the same run and database: the rate of plain batched INSERTs of the rows HQ stores for the
same events (``hq_event`` and ``hq_entry``), with no checks at all, and of the same rows sent
by COPY (as :mod:`hq.bulk` sends HQ's rows).

The figures: events stored per second, and the time from a batch being ready to its commit
(p50 and p99), which is what a device waits for its acknowledgement beyond the network.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from edge.domain.ids import IdFactory
from edge.process import settle_heap
from edge.progress import Progress
from edge.protocol import Event, EventBatch
from edge.security.keys import create_secret_file
from hq.bulk import insert_rows
from hq.ledger import SequenceMoved
from hq.models import CentralEntry, StoredEvent
from hq.schema import upgrade
from hq.service import GROUP_MAX, HqConfig, HqService, make_hq_engine
from tests.hq.events import entry
from tests.postgres import fresh_schema, postgres_cluster

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@dataclass
class Workload:
    """Each device's batches, in order."""

    batches: dict[str, list[EventBatch]]

    @property
    def events(self) -> int:
        return sum(len(b.events) for bs in self.batches.values() for b in bs)


def make_workload(
    devices: int,
    per_device: int,
    batch: int,
    away: float = 0.1,
    members_each: int = 25,
    seed: int = 1,
) -> Workload:
    """``per_device`` events of each device: ``members_each`` registrations, then a purchase
    every 30 s, ``away`` of them by members of other stores (from the third batch on, when
    the other stores' registrations have reached HQ, as they would have in a running
    chain)."""
    rng = random.Random(seed)
    ids = IdFactory()
    members: dict[str, list[tuple[str, str]]] = {}
    out: dict[str, list[EventBatch]] = {}
    names = [(f"K{n:04d}", f"S{n // 2:04d}") for n in range(devices)]
    for n, (device, _store) in enumerate(names):
        members[device] = [(ids.new(), f"29{n:05d}{m:06d}") for m in range(members_each)]
    everyone = [m for ms in members.values() for m in ms]
    total = devices * per_device
    with Progress("making the devices' events", total, "events") as bar:
        for device, store in names:
            events: list[Event] = []

            def add(
                kind: str,
                data: dict,
                at: datetime,
                events: list[Event] = events,
                device: str = device,
                store: str = store,
            ) -> None:
                events.append(
                    Event(event_id=ids.new(), kind=kind, store_id=store, device_id=device,
                          at=at, data=data, seq=len(events) + 1)
                )  # fmt: skip

            for member, card in members[device]:
                add(
                    "member.registered",
                    {"member_id": member, "card_no": card, "tier": "normal",
                     "consent_version": "2026-01", "entries": []},
                    T0,
                )  # fmt: skip
            while len(events) < per_device:
                # Most purchases are by the store's own members; some by members of others.
                later = len(events) >= 2 * batch
                pool = everyone if later and rng.random() < away else members[device]
                member, card = rng.choice(pool)
                at = T0 + timedelta(seconds=30 * len(events))
                credit = entry(member, 120, device, store, at=at)
                add("points.accrued", {"member_id": member, "card_no": card,
                    "entries": [credit]}, at)  # fmt: skip
            out[device] = [
                EventBatch(device_id=device, batch_id=ids.new(), events=events[i : i + batch])
                for i in range(0, len(events), batch)
            ]
            bar.advance(len(events))
    return Workload(out)


def _worker(url: str, key_file: str, tasks: mp.Queue, results: mp.Queue) -> None:
    """Stores batches as the MQTT handler does: the batches waiting together (up to
    ``GROUP_MAX``) in one transaction, one by one when that transaction loses a race."""
    config = HqConfig(database_url=url, client_id="bench", data_key_file=key_file)
    hq = HqService(config, make_hq_engine(url))
    settle_heap()  # as `kiosk hq serve` does before it runs
    stop = False
    while not stop:
        group = [tasks.get()]
        while len(group) < GROUP_MAX:
            try:
                group.append(tasks.get_nowait())
            except queue.Empty:
                break
        if None in group:
            stop = True
            for _ in range(group.count(None) - 1):
                tasks.put(None)  # another worker's
            group = [task for task in group if task is not None]
        if not group:
            break
        now = datetime.now(UTC)
        try:
            done = hq.store_batches([(device, batch) for device, _, batch in group], now)
        except (SequenceMoved, SQLAlchemyError):
            done = [hq.store_batch(device, batch, now) for device, _, batch in group]
        for (device, index, _), result in zip(group, done, strict=True):
            results.put((device, index, result.gap, len(result.stored)))
    hq.engine.dispose()


def run_workers(url: str, work: Workload, count: int) -> tuple[float, list[float]]:
    """Stores the workload with ``count`` worker processes; returns (seconds, the time from
    each batch being ready to its commit)."""
    ctx = mp.get_context("fork")
    tasks: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    key_file = Path(tempfile.mkdtemp(prefix="mck-bench-key-")) / "hq-data.key"
    create_secret_file(key_file)  # the workers share HQ's data key, as a chain's do
    procs = [
        ctx.Process(target=_worker, args=(url, str(key_file), tasks, results)) for _ in range(count)
    ]
    for p in procs:
        p.start()
    ready_at: dict[str, float] = {}
    latencies: list[float] = []
    started = time.perf_counter()
    for device, batches in work.batches.items():
        ready_at[device] = time.perf_counter()
        tasks.put((device, 0, batches[0]))
    left = len(work.batches)
    with Progress(f"  {count} worker(s)", work.events, "events") as bar:
        while left:
            device, index, gap, stored = results.get()
            now = time.perf_counter()
            latencies.append(now - ready_at[device])
            bar.advance(stored)
            nxt = index if gap else index + 1
            if nxt < len(work.batches[device]):
                ready_at[device] = now
                tasks.put((device, nxt, work.batches[device][nxt]))
            else:
                left -= 1
    elapsed = time.perf_counter() - started
    for _ in procs:
        tasks.put(None)
    for p in procs:
        p.join(60)
    return elapsed, latencies


def plain_inserts(url: str, work: Workload, copy: bool) -> float:
    """Seconds to INSERT the same hq_event and hq_entry rows in the devices' batches,
    unchecked, one transaction per batch: with executemany, or with HQ's own bulk inserts
    (COPY, :mod:`hq.bulk`)."""
    engine = make_hq_engine(url)
    number = 0
    started = time.perf_counter()
    now = datetime.now(UTC)
    how = "COPY" if copy else "executemany"
    with Progress(f"  plain INSERTs ({how})", work.events, "events") as bar:
        for batches in work.batches.values():
            for batch in batches:
                rows, entries = [], []
                for event in batch.events:
                    number += 1
                    rows.append({
                        "hq_seq": number, "event_id": event.event_id,
                        "device_id": event.device_id, "store_id": event.store_id,
                        "device_seq": event.seq, "kind": event.kind, "at": event.at,
                        "payload": event.model_dump_json(), "received_at": now,
                    })  # fmt: skip
                    for e in event.data.get("entries", []):
                        entries.append({
                            "id": e["id"], "member_id": e["member_id"], "kind": e["kind"],
                            "points": e["points"], "lot_id": e["lot_id"], "ref": e["ref"],
                            "store_id": e["store_id"], "device_id": e["device_id"],
                            "at": datetime.fromisoformat(e["at"]),
                            "event_id": event.event_id,
                        })  # fmt: skip
                with engine.begin() as conn:
                    if copy:
                        insert_rows(conn, StoredEvent, rows)
                        insert_rows(conn, CentralEntry, entries)
                    else:
                        conn.execute(insert(StoredEvent), rows)
                        if entries:
                            conn.execute(insert(CentralEntry), entries)
                bar.advance(len(rows))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--events-per-device", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    work = make_workload(args.devices, args.events_per_device, args.batch)
    settle_heap()  # the workload stays, out of the collector's way of every run below
    print(f"{work.events:,} events from {args.devices} devices, batches of {args.batch}")
    with postgres_cluster() as cluster:
        plain = {}
        for copy in (False, True):
            with fresh_schema(cluster.url) as url:
                engine = make_hq_engine(url)
                upgrade(engine)
                engine.dispose()
                plain[copy] = work.events / plain_inserts(url, work, copy)
        print(
            f"plain batched INSERTs (executemany): {plain[False]:,.0f} events/s; the same rows "
            f"by COPY, as HQ sends them: {plain[True]:,.0f} events/s"
        )
        for count in (int(c) for c in args.workers.split(",")):
            with fresh_schema(cluster.url) as url:
                engine = make_hq_engine(url)
                upgrade(engine)
                engine.dispose()
                seconds, latencies = run_workers(url, work, count)
            rate = work.events / seconds
            print(
                f"HQ ingest, {count} worker(s): {rate:,.0f} events/s "
                f"({rate / plain[False]:.2f} of plain INSERTs, {rate / plain[True]:.2f} of COPY); "
                f"batch ready to committed p50 {_pct(latencies, 50) * 1000:.0f} ms, "
                f"p99 {_pct(latencies, 99) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
