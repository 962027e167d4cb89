"""A chain simulation: stores of kiosks and lanes against a real broker and real HQ workers.

    .venv/bin/python -m bench.chain [--stores 50,200,500] [--members 100] [--lanes 10]
                                    [--rate 0.5] [--away 0.1] [--seconds 60] [--lost 20]

One Mosquitto with the project's TLS and ACL (every device with its own certificate), a
throwaway PostgreSQL cluster, and two ``kiosk hq serve`` workers sharing the devices'
traffic. For each chain size, a fresh HQ schema gets ``--members`` members per store through
``kiosk hq import``'s importer; each store has two kiosks. At store 000 and store 001 the
first kiosk is a real one (the services and ``kiosk agent``), which receives its imported
members through its store's feed; the others are simulated kiosks that speak the same
protocol (:mod:`bench.chain_devices`): purchases at ``--rate`` per store per second, a share
``--away`` by members of other stores (fetched from HQ first), events acknowledged by HQ,
and the store's feed followed.

Printed figures:
- replica messages a kiosk receives per hour, at each chain size, and their ratio to the
  smallest chain (flat, within 10 %, is the goal: a kiosk hears only about its own
  store's members);
- HQ's ingest meanwhile, and the time from an event's creation at a kiosk to HQ's ack;
- fetching a member of another store: p50/p99 under load, from the simulated kiosks (the
  MQTT request) and from a real kiosk (the service's lookup, through the agent);
- with ``--lanes`` lanes per store at the largest size: the time from ``kiosk card lost``
  at a real kiosk to the refusal at the last lane of the chain, p50/p99 over ``--lost``
  cards;
- faults (``--faults``): the broker restarted, a worker killed, PostgreSQL restarted under
  load; afterwards HQ holds each event once, every device's events in order with no gap,
  and the real kiosks' ledgers verify.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bench.chain_devices import KioskSpec, serve
from bench.hq_import import write_export
from bench.swarm import raise_fd_limit
from edge.app import AppContext
from edge.domain.errors import KioskError
from edge.progress import Progress
from edge.security.keys import load_secret
from edge.security.personal import PhoneVault
from edge.services.cards import report_lost_card
from edge.services.members import show_member
from edge.services.points import accrue_purchase
from edge.services.staff import add_staff
from edge.services.verify import verify_ledger
from edge.storage.models import Member
from edge.sync.agent import Agent
from edge.sync.broker import Identity, render_broker
from hq.feeds import feed_head
from hq.importer import MemberImporter, read_export
from hq.models import CentralCard, CentralMember, QuarantinedEvent, StoredEvent
from hq.schema import upgrade
from hq.service import make_hq_engine
from tests.hq.database import hq_data_key_file
from tests.postgres import PostgresCluster, fresh_schema, postgres_cluster
from tests.sync.conftest import (
    MOSQUITTO,
    Broker,
    Runner,
    free_port,
    make_data_dir,
    open_app,
    wait_until,
)
from tests.sync.helpers import HqProcess, drained

PROCESSES = 2  # simulated devices' processes (the machine has two cores)
REAL = {"S000": "K000a", "S001": "K001a"}


def store_name(n: int) -> str:
    return f"S{n:03d}"


def kiosk_names(n: int) -> tuple[str, str]:
    return f"K{n:03d}a", f"K{n:03d}b"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Chain:
    """The broker, PostgreSQL and what every chain size shares."""

    def __init__(self, root: Path, stores: int, lanes: int) -> None:
        self.root = root
        self.stores, self.lanes = stores, lanes
        identities = [Identity("hq", "hq")]
        for n in range(stores):
            identities += [Identity(k, "kiosk", store_name(n)) for k in kiosk_names(n)]
            identities += [
                Identity(f"L{n:03d}-{m:02d}", "lane", store_name(n)) for m in range(lanes)
            ]
        print(f"certificates and ACL for {len(identities):,} devices ...", flush=True)
        port = free_port()
        conf = render_broker(root / "broker", port, identities, max_queued=10_000)
        self.broker = Broker((root / "broker").resolve(), port, conf)
        self._start_broker()

    def _start_broker(self) -> None:
        raise_fd_limit()  # inherited by Mosquitto: one file per connection
        self.broker.start()

    def restart_broker(self) -> None:
        self.broker.kill()
        self._start_broker()


class Run:
    """One chain size: its HQ schema, workers, real kiosks and simulated devices."""

    def __init__(
        self,
        chain: Chain,
        cluster: PostgresCluster,
        url: str,
        stores: int,
        args: argparse.Namespace,
        with_lanes: bool,
    ) -> None:
        self.chain, self.cluster, self.url, self.stores, self.args = (
            chain, cluster, url, stores, args
        )  # fmt: skip
        self.engine = make_hq_engine(url)
        upgrade(self.engine)
        self.root = chain.root / f"run-{stores}"
        self.root.mkdir()
        self._import(stores, args.members)
        self.workers = [
            HqProcess(chain.broker, url, self.root / f"hq-{n}.log", client_id=f"hq-{n}")
            for n in range(2)
        ]
        for worker in self.workers:
            worker.start()
        self.homes = self._homes()
        self.real: dict[str, AppContext] = {}
        self.agents: list[Runner] = []
        for n, (store, device) in enumerate(REAL.items()):
            data = make_data_dir(self.root, chain.broker, device, store, 1 + 50_000 * n)
            app = open_app(data)
            self.real[store] = app
            self.agents.append(Runner(Agent(app).run))
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self._spawn(with_lanes)

    def _import(self, stores: int, members: int) -> None:
        export = self.root / "members.csv"
        write_export(export, stores * members, stores)
        # sealed with the data key the HQ workers (HqProcess) serve with
        vault = PhoneVault(load_secret(Path(hq_data_key_file())), os.urandom(32))
        importer = MemberImporter(self.engine, vault, {store_name(n) for n in range(stores)})
        with Progress(f"importing {stores} stores' members", stores * members, "rows") as bar:
            importer.run(read_export(export), bar.advance)

    def _homes(self) -> dict[str, list[tuple[str, str]]]:
        homes: dict[str, list[tuple[str, str]]] = {}
        with Session(self.engine) as s:
            rows = s.execute(
                select(CentralMember.store_id, CentralMember.id, CentralCard.card_no).join(
                    CentralCard, CentralCard.member_id == CentralMember.id
                )
            )
            for store, member, card in rows:
                homes.setdefault(store, []).append((member, card))
        return homes

    def _spawn(self, with_lanes: bool) -> None:
        kiosks: list[KioskSpec] = []
        with Session(self.engine) as s:
            for n in range(self.stores):
                store = store_name(n)
                head = feed_head(s, store)
                for device in kiosk_names(n):
                    if device not in REAL.values():
                        kiosks.append(KioskSpec(device, store, head, self.homes[store]))
        lanes = []
        if with_lanes:
            lanes = [
                (f"L{n:03d}-{m:02d}", store_name(n))
                for n in range(self.stores)
                for m in range(self.args.lanes)
            ]
        visitors = [m for ms in self.homes.values() for m in ms[:10]]
        ctx = mp.get_context("spawn")
        broker = self.chain.broker
        for p in range(PROCESSES):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=serve,
                args=(
                    theirs,
                    "127.0.0.1",
                    broker.port,
                    broker.directory,
                    kiosks[p::PROCESSES],
                    visitors,
                    lanes[p::PROCESSES],
                ),
                daemon=True,
            )
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        devices = len(kiosks) + len(lanes)
        with Progress(f"connecting {devices:,} simulated devices", PROCESSES, "processes") as bar:
            for pipe in self.pipes:
                answer = pipe.recv()
                assert answer[0] == "ready", answer
                bar.advance(1)

    def tell(self, *order: object) -> None:
        for pipe in self.pipes:
            pipe.send(order)

    def reports(self) -> list[dict[str, Any]]:
        self.tell("report")
        out = []
        for pipe in self.pipes:
            answer = pipe.recv()
            while answer[0] != "report":
                answer = pipe.recv()
            out.append(answer[1])
        return out

    def settle(self, timeout_s: float = 300) -> None:
        self.tell("settle")
        deadline = time.monotonic() + timeout_s
        for pipe in self.pipes:
            if not pipe.poll(max(1.0, deadline - time.monotonic())):
                raise TimeoutError("the simulated kiosks' events were not all acknowledged")
            answer = pipe.recv()
            assert answer[0] == "settled", answer
        for store, app in self.real.items():
            wait_until(drained(app), timeout_s, f"{store}'s real kiosk")

    def stored(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(StoredEvent)) or 0)

    def close(self) -> None:
        self.tell("quit")
        for proc in self.procs:
            proc.join(30)
        for runner in self.agents:
            runner.stop()
        for app in self.real.values():
            app.close()
        for worker in self.workers:
            worker.stop()
        self.engine.dispose()


def holds(app: AppContext, members: int) -> bool:
    with app.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Member)) or 0) >= members


def real_kiosks_shop(
    run: Run, stop: threading.Event, fetches: list[float], unanswered: list[str]
) -> Callable[[], None]:
    """The real kiosks' own day: purchases of their members and, now and then, a member of
    another store looked up at the screen (the service fetches them through the agent)."""

    def day() -> None:
        n = 0
        others = [m for s, ms in run.homes.items() if s not in REAL for m in ms[10:40]]
        while not stop.is_set():
            for store, app in run.real.items():
                _, card = run.homes[store][n % len(run.homes[store])]
                accrue_purchase(app, card, 1_000 + n, f"REAL-{store}-{n}")
                if n % 5 == 0 and others:
                    _, visitor = others.pop()
                    started = time.perf_counter()
                    try:
                        show_member(app, card_no=visitor)
                    except KioskError:  # HQ did not answer in time: counted as its wait
                        unanswered.append(visitor)
                    fetches.append(time.perf_counter() - started)
            n += 1
            stop.wait(2.0 / max(run.args.rate, 0.1))  # each at a simulated kiosk's rate

    return day


def measure(run: Run, seconds: float) -> dict[str, Any]:
    for store, app in run.real.items():
        wait_until(
            partial(holds, app, len(run.homes[store])),
            120,
            f"{store}'s imported members at its real kiosk",
        )
    run.tell("reset")
    stored_before, started = run.stored(), time.monotonic()
    run.tell("load", run.args.rate / 2, run.args.away)
    stop, real_fetches, unanswered = threading.Event(), list[float](), list[str]()
    shopper = threading.Thread(target=real_kiosks_shop(run, stop, real_fetches, unanswered))
    shopper.start()
    with Progress(f"{run.stores} stores under load", int(seconds), "s") as bar:
        for _ in range(int(seconds)):
            time.sleep(1)
            bar.advance(1)
    run.tell("stop")
    stop.set()
    shopper.join()
    loaded = time.monotonic() - started
    reports = run.reports()
    stored = run.stored() - stored_before
    run.settle()
    msgs: dict[str, int] = {}
    items: dict[str, int] = {}
    acks: list[float] = []
    fetch: list[float] = []
    for r in reports:
        msgs |= r["stats"]["replica_msgs"]
        items |= r["stats"]["replica_items"]
        acks += r["stats"]["ack_s"]
        fetch += r["stats"]["fetch_s"]
    kiosks = 2 * run.stores - len(REAL)
    per_hour = sum(msgs.values()) / kiosks / loaded * 3600
    items_hour = sum(items.values()) / kiosks / loaded * 3600
    return {
        "stores": run.stores,
        "per_hour": per_hour,
        "items_hour": items_hour,
        "ingest": stored / loaded,
        "ack_p50": pct(acks, 0.5),
        "ack_p99": pct(acks, 0.99),
        "fetch_p50": pct(fetch, 0.5),
        "fetch_p99": pct(fetch, 0.99),
        "fetches": len(fetch),
        "real_fetch_p50": pct(real_fetches, 0.5),
        "real_fetch_p99": pct(real_fetches, 0.99),
        "real_fetches": len(real_fetches),
        "real_unanswered": len(unanswered),
        "gaps": sum(r["stats"]["gap_requests"] for r in reports),
        "resends": sum(r["stats"]["resends"] for r in reports),
    }


def lost_cards(run: Run, count: int) -> list[float]:
    """``kiosk card lost`` at a real kiosk, then the time to the last lane's refusal."""
    app = run.real["S000"]
    clerk = add_staff(app, "bench-clerk", "clerk", "2580")
    lanes = run.stores * run.args.lanes
    took = []
    with Progress(f"lost cards to {lanes:,} lanes", count, "cards") as bar:
        for n in range(count):
            _, card = run.homes["S000"][-1 - n]
            run.tell("watch", card)
            run.reports()  # the watch is in place in every process
            started = time.monotonic()
            report_lost_card(app, card, clerk)
            while True:
                reports = run.reports()
                lanes_seen = sum(r["seen_count"].get(card, 0) for r in reports)
                if lanes_seen >= lanes:
                    last = max(r["seen"][card] for r in reports if card in r["seen"])
                    took.append(last - started)
                    break
                if time.monotonic() - started > 60:
                    raise TimeoutError(f"card {card} reached {lanes_seen} of {lanes} lanes")
                time.sleep(0.05)
            bar.advance(1)
    return took


def faults(run: Run, chain: Chain) -> dict[str, Any]:
    """Load, and meanwhile the broker restarted, a worker killed, PostgreSQL restarted."""
    run.tell("load", run.args.rate / 2, run.args.away)
    time.sleep(5)
    chain.restart_broker()
    time.sleep(5)
    victim = run.workers[0]
    victim.kill()
    time.sleep(3)
    victim.start()
    time.sleep(5)
    run.cluster.restart("immediate")
    time.sleep(10)
    run.tell("stop")
    run.settle(600)
    with Session(run.engine) as s:
        ids = s.scalar(select(func.count()).select_from(StoredEvent))
        distinct = s.scalar(select(func.count(StoredEvent.event_id.distinct())))
        gaps = s.execute(
            text(
                "SELECT device_id FROM hq_event GROUP BY device_id "
                "HAVING MAX(device_seq) <> COUNT(*) OR MIN(device_seq) <> 1"
            )
        ).all()
        quarantined = s.scalar(select(func.count()).select_from(QuarantinedEvent))
    verified = {store: verify_ledger(app).ok for store, app in run.real.items()}
    return {
        "events": ids,
        "distinct": distinct,
        "devices_with_gaps": len(gaps),
        "quarantined": quarantined,
        "ledgers_verified": verified,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="50,200,500")
    parser.add_argument("--members", type=int, default=100, help="members per store")
    parser.add_argument("--lanes", type=int, default=10, help="lanes per store, largest size")
    parser.add_argument("--rate", type=float, default=0.5, help="purchases per store per s")
    parser.add_argument("--away", type=float, default=0.1, help="share by other stores' members")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--lost", type=int, default=20)
    parser.add_argument("--faults", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.stores.split(","))
    assert os.path.exists(MOSQUITTO), "mosquitto is not installed"
    raise_fd_limit()
    results = []
    lost: list[float] = []
    fault_report: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="mck-chain-") as tmp,
        postgres_cluster(durable=True) as cluster,
    ):
        chain = Chain(Path(tmp), sizes[-1], args.lanes)
        try:
            for size in sizes:
                largest = size == sizes[-1]
                with fresh_schema(cluster.url) as url:
                    lanes = largest and args.lanes > 0
                    run = Run(chain, cluster, url, size, args, with_lanes=lanes)
                    try:
                        results.append(measure(run, args.seconds))
                        if largest and args.lanes and args.lost:
                            lost = lost_cards(run, args.lost)
                        if largest and args.faults:
                            fault_report = faults(run, chain)
                    finally:
                        run.close()
        finally:
            chain.broker.stop()
    base = results[0]["per_hour"]
    print()
    print("chain   replica msgs/kiosk/h  (vs smallest)  items/h   ingest ev/s  ack p50/p99 s")
    for r in results:
        print(
            f"{r['stores']:>5}   {r['per_hour']:>18,.0f}  ({r['per_hour'] / base:>5.2f})"
            f"  {r['items_hour']:>8,.0f}  {r['ingest']:>10,.0f}  "
            f"{r['ack_p50']:.3f}/{r['ack_p99']:.3f}"
        )
    for r in results:
        print(
            f"fetch of another store's member at {r['stores']} stores: simulated kiosks "
            f"p50 {r['fetch_p50'] * 1000:.0f} ms, p99 {r['fetch_p99'] * 1000:.0f} ms "
            f"({r['fetches']}); real kiosk's lookup p50 {r['real_fetch_p50'] * 1000:.0f} ms, "
            f"p99 {r['real_fetch_p99'] * 1000:.0f} ms ({r['real_fetches']}, "
            f"{r['real_unanswered']} not answered in time); "
            f"gap requests {r['gaps']}, resends {r['resends']}"
        )
    if lost:
        print(
            f"lost card to the last of {sizes[-1] * args.lanes:,} lanes: p50 "
            f"{pct(lost, 0.5):.3f} s, p99 {pct(lost, 0.99):.3f} s, max {max(lost):.3f} s "
            f"({len(lost)} cards)"
        )
    if fault_report:
        print(f"after the faults: {fault_report}")
    spread = max(r["per_hour"] for r in results) / min(r["per_hour"] for r in results) - 1
    print(f"replica traffic spread across chain sizes: {spread:.1%} (goal: within 10 %)")


if __name__ == "__main__":
    main()
