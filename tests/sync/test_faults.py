"""Exactly once under faults: broker and HQ killed, agents SIGKILLed, links cut, at random.

Two kiosks (stores S001 and S002) run ``kiosk agent`` as processes behind cuttable TCP
proxies to a real Mosquitto (with a small queue limit, so it also drops messages); HQ runs
beside them as ``kiosk hq serve``; two lanes publish purchases. At least 10,000 purchases
and redemptions go in while, every 0.1-0.7 s, one fault strikes (20 of each kind). Afterwards
HQ must hold every event exactly once, stored in each device's own order with no gap, every
outbox must have drained, every node's balances must equal HQ's, every ledger must verify,
and no service may have exited by itself meanwhile.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.errors import Refusal
from edge.protocol import Topics
from edge.protocol.link import TlsFiles
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Member, Purchase
from edge.sync.agent import Agent
from hq.lanes import Lane
from hq.ledger import balances, ledger_sums
from hq.models import QuarantinedEvent, StoredEvent
from hq.service import HqService, make_hq_engine
from tests.hq.database import sqlite_hq_url
from tests.sync.conftest import Runner, make_data_dir, open_app, start_broker, wait_until
from tests.sync.helpers import (
    AgentProcess,
    HqProcess,
    caught_up,
    client,
    drained,
    hq_config,
    local_balances,
    outbox_ids,
    store_balances,
)
from tests.sync.proxy import CuttableProxy
from tests.sync.test_ordering import batch, kiosk_with_history, stored_order, wait_ack

MEMBERS_PER_STORE = 15
DRIVER_OPS_PER_KIOSK = 1500  # half accruals, half redemptions
LANE_PURCHASES = 3500  # per lane
LANE_RATE = 80.0  # purchases a second, per lane
FAULTS_PER_KIND = 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_exactly_once_under_faults(tmp_path):
    rng = random.Random(20260301)
    broker = start_broker(tmp_path / "broker", max_queued=100)
    devices = {"K001": "S001", "K002": "S002"}
    lanes_of = {"K001": "L1", "K002": "L2"}
    proxies = {d: CuttableProxy(broker.port) for d in devices}
    dirs = {
        d: make_data_dir(tmp_path, broker, d, s, 1 if d == "K001" else 50_000, port=proxies[d].port)
        for d, s in devices.items()
    }
    apps = {d: open_app(dirs[d]) for d in devices}
    hq_url = sqlite_hq_url(tmp_path / "hq.db")
    hq = HqProcess(broker, hq_url, tmp_path / "hq.log")
    hq.start()
    hq_engine = make_hq_engine(hq_url)
    agents = {d: AgentProcess(dirs[d]) for d in devices}
    cards: dict[str, list[str]] = {d: [] for d in devices}
    try:
        for i, (d, app) in enumerate(apps.items()):
            add_gift(app, "PEN", "Pen", points=7, stock=1_000_000)
            for m in range(MEMBERS_PER_STORE):
                reg = register_member(app, f"139{i}{m:07d}", consent=True)
                accrue_purchase(app, reg.card_no, 5_000_000, f"SEED-{d}-{m}")
                cards[d].append(reg.card_no)
        for agent in agents.values():
            agent.start()
        for d, app in apps.items():
            wait_until(drained(app), 60, f"{d} to reach HQ before the faults")

        errors: list[BaseException] = []
        exited: list[tuple[str, int | None]] = []
        done = {"driver": 0, "redeemed": 0, "refused": 0}
        lane_reports = {}

        def drive(d: str) -> None:
            app, local = apps[d], random.Random(d)
            try:
                for n in range(DRIVER_OPS_PER_KIOSK):
                    card = local.choice(cards[d])
                    if n % 2:
                        try:
                            redeem_gift(app, card, "PEN", request_id=f"RQ-{d}-{n}")
                            done["redeemed"] += 1
                        except Refusal:
                            done["refused"] += 1
                    else:
                        accrue_purchase(app, card, local.randint(100, 9_999), f"D-{d}-{n}")
                    done["driver"] += 1
                    time.sleep(0.005)
            except BaseException as exc:
                errors.append(exc)
            finally:
                took[f"driver {d}"] = time.monotonic() - began

        def lane(d: str) -> None:
            lane_id = lanes_of[d]
            ca, cert, key = broker.tls(lane_id)
            try:
                with Lane(
                    devices[d], lane_id, "127.0.0.1", broker.port, TlsFiles(ca, cert, key)
                ) as ln:
                    lane_reports[d] = ln.simulate(
                        cards[d], LANE_PURCHASES, LANE_RATE, resend_after_s=4.0, deadline_s=600
                    )
            except BaseException as exc:
                errors.append(exc)
            finally:
                took[f"lane {d}"] = time.monotonic() - began

        faults = ["broker", "agent", "cut", "hq"] * FAULTS_PER_KIND
        rng.shuffle(faults)
        struck = {"broker": 0, "agent": 0, "cut": 0, "hq": 0}
        striking = threading.Lock()
        finished = threading.Event()

        def chaos() -> None:
            try:
                for kind in faults:
                    time.sleep(rng.uniform(0.1, 0.7))
                    with striking:
                        if kind == "broker":
                            broker.kill()
                            time.sleep(rng.uniform(0.1, 0.8))
                            broker.start()
                        elif kind == "agent":
                            victim = agents[rng.choice(list(devices))]
                            victim.kill()
                            time.sleep(rng.uniform(0.0, 0.5))
                            victim.start()
                        elif kind == "hq":
                            hq.kill()
                            time.sleep(rng.uniform(0.0, 0.5))
                            hq.start()
                        else:
                            proxies[rng.choice(list(devices))].cut()
                    struck[kind] += 1
            except BaseException as exc:
                errors.append(exc)
            finally:
                finished.set()
                took["faults"] = time.monotonic() - began

        def watch() -> None:
            """A service that exits when no fault struck it is a failure (restarted to go on)."""
            while not finished.wait(0.5):
                with striking:
                    for d, agent in agents.items():
                        if not agent.alive():
                            exited.append((d, agent.proc.returncode if agent.proc else None))
                            agent.start()
                    if not hq.alive():
                        exited.append(("hq", hq.proc.returncode if hq.proc else None))
                        hq.start()

        took: dict[str, float] = {}
        began = time.monotonic()
        threads = [threading.Thread(target=drive, args=(d,)) for d in devices]
        threads += [threading.Thread(target=lane, args=(d,)) for d in devices]
        threads.append(threading.Thread(target=chaos))
        threads.append(threading.Thread(target=watch))
        for t in threads:
            t.start()
        for t in threads:
            t.join(800)
        assert not errors, errors
        assert struck == {k: FAULTS_PER_KIND for k in struck}
        assert exited == [], f"services exited by themselves: {exited}"
        assert hq.alive() and all(agent.alive() for agent in agents.values())

        # Everything settles once the faults stop.
        settling = time.monotonic()
        for d, app in apps.items():
            wait_until(drained(app), 180, f"{d}'s outbox to drain", every=0.5)
        for d, app in apps.items():
            wait_until(
                caught_up(app, hq_engine),
                180,
                f"{d}'s replica to catch up",
                every=0.5,
            )
        took["settle"] = time.monotonic() - settling
        print("seconds taken:", {k: round(v) for k, v in took.items()})
    finally:
        for agent in agents.values():
            if agent.alive():
                agent.stop()
        assert hq.stop() == 0
        for p in proxies.values():
            p.close()
        broker.stop()

    operations = done["driver"] + sum(r.sent for r in lane_reports.values())
    assert operations >= 10_000
    assert done["redeemed"] >= 0.9 * DRIVER_OPS_PER_KIOSK  # refusals would hide the test
    for d, report in lane_reports.items():
        assert report.accepted == LANE_PURCHASES, (d, report.refused)
        with apps[d].db.read() as s:
            credited = s.scalar(
                select(func.count())
                .select_from(Purchase)
                .where(Purchase.receipt_id.like(f"{lanes_of[d]}-%"))
            )
        assert credited == LANE_PURCHASES

    with Session(hq_engine) as s:
        stored = list(
            s.execute(
                select(
                    StoredEvent.event_id, StoredEvent.device_id, StoredEvent.device_seq
                ).order_by(StoredEvent.hq_seq)
            )
        )
        assert s.scalar(select(func.count()).select_from(QuarantinedEvent)) == 0
        hq_balances = balances(s)
        assert ledger_sums(s) == {k: v for k, v in hq_balances.items() if k in ledger_sums(s)}
    stored_ids = [row[0] for row in stored]
    assert len(stored_ids) == len(set(stored_ids))
    assert set(stored_ids) == set(outbox_ids(apps["K001"])) | set(outbox_ids(apps["K002"]))
    for d in devices:
        seqs = [seq for _, dev, seq in stored if dev == d]  # in the order HQ stored them
        assert seqs == list(range(1, len(seqs) + 1)), f"{d}'s events out of order, gap or double"
    for d, app in apps.items():
        # Each store holds its own members (no one shopped at the other), at HQ's balances.
        held = store_balances(hq_engine, devices[d])
        assert set(held) and set(held) < set(hq_balances)
        assert local_balances(app) == held, f"{d} disagrees with HQ"
        verified = verify_ledger(app)
        assert verified.ok, verified.problems
        app.close()


def test_an_accrual_published_before_its_registration_stops_nobody(broker, tmp_path):
    """The reproduction: seq 2 (the accrual) published before seq 1 (the registration),
    each with K002's own certificate, while K004's agent (the other kiosk of K002's store)
    takes HQ's replica."""
    source, reg, events = kiosk_with_history(tmp_path, broker, "K002", "S002", 50_000)
    hq = HqService(hq_config(broker, tmp_path))
    k004 = open_app(make_data_dir(tmp_path, broker, "K004", "S002", 1))
    agent = Agent(k004)
    runners = [Runner(hq.run), Runner(agent.run)]
    topics = Topics()
    k002 = client(broker, "K002", [(topics.ack("K002"), 1)], client_id="K002", store_id="S002")
    k002.start()
    try:
        wait_until(lambda: k002.connected and hq.link.connected, 20, "links up")
        wait_until(lambda: agent.link.connected, 20, "K004's agent up")
        late = batch("K002", *events[1:])
        assert k002.publish(topics.events("K002"), late.to_bytes(), qos=1)
        ack = wait_ack(k002, late.batch_id)
        assert ack.event_ids == [] and ack.expect_seq == 1
        first = batch("K002", events[0])
        assert k002.publish(topics.events("K002"), first.to_bytes(), qos=1)
        assert wait_ack(k002, first.batch_id).event_ids == [events[0].event_id]
        assert k002.publish(topics.events("K002"), late.to_bytes(), qos=1)
        assert set(wait_ack(k002, late.batch_id).event_ids) == {e.event_id for e in events[1:]}

        assert stored_order(hq.engine, "K002") == [e.seq for e in events]
        with Session(hq.engine) as s:
            at_hq = balances(s)[reg.member_id]
        assert at_hq == 123

        def replica_balance() -> int | None:
            with k004.db.read() as s:
                member = s.get(Member, reg.member_id)
                return None if member is None else member.balance

        wait_until(lambda: replica_balance() == at_hq, 20, "K004's replica to agree with HQ")
    finally:
        k002.close()
        for r in runners:
            r.stop()  # raises if a loop died
    assert verify_ledger(k004).ok
    source.close()
    k004.close()
