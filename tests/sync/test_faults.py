"""Exactly once under faults: broker killed, agents SIGKILLed, links cut, all at random.

Two kiosks (stores S001 and S002) run ``kiosk agent`` as processes behind cuttable TCP
proxies to a real Mosquitto (with a small queue limit, so it also drops messages); HQ runs
beside them; two lanes publish purchases. More than 10,000 purchases and redemptions go in
while, every 1-4 s, one fault strikes (at least 20 of each kind). Afterwards HQ must hold
every event exactly once with no gap per device, and every node's balances must equal HQ's.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.errors import Refusal
from edge.protocol.link import TlsFiles
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Purchase
from hq.lanes import Lane
from hq.ledger import balances, ledger_sums
from hq.models import StoredEvent
from hq.service import make_hq_engine
from tests.sync.conftest import make_data_dir, open_app, start_broker, wait_until
from tests.sync.helpers import (
    AgentProcess,
    HqProcess,
    caught_up,
    drained,
    local_balances,
    outbox_ids,
)
from tests.sync.proxy import CuttableProxy

MEMBERS_PER_STORE = 15
DRIVER_OPS_PER_KIOSK = 3000  # half accruals, half redemptions
LANE_PURCHASES = 2000  # per lane
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
    hq_url = f"sqlite+pysqlite:///{tmp_path / 'hq.db'}"
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
                    time.sleep(0.03)
            except BaseException as exc:
                errors.append(exc)

        def lane(d: str) -> None:
            lane_id = lanes_of[d]
            ca, cert, key = broker.tls(lane_id)
            try:
                with Lane(
                    devices[d], lane_id, "127.0.0.1", broker.port, TlsFiles(ca, cert, key)
                ) as ln:
                    lane_reports[d] = ln.simulate(
                        cards[d], LANE_PURCHASES, 14.0, resend_after_s=4.0, deadline_s=600
                    )
            except BaseException as exc:
                errors.append(exc)

        faults = ["broker", "agent", "cut"] * FAULTS_PER_KIND
        rng.shuffle(faults)
        struck = {"broker": 0, "agent": 0, "cut": 0}

        def chaos() -> None:
            try:
                for kind in faults:
                    time.sleep(rng.uniform(1.0, 4.0))
                    if kind == "broker":
                        broker.kill()
                        time.sleep(rng.uniform(0.1, 0.8))
                        broker.start()
                    elif kind == "agent":
                        victim = agents[rng.choice(list(devices))]
                        victim.kill()
                        time.sleep(rng.uniform(0.0, 0.5))
                        victim.start()
                    else:
                        proxies[rng.choice(list(devices))].cut()
                    struck[kind] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(d,)) for d in devices]
        threads += [threading.Thread(target=lane, args=(d,)) for d in devices]
        threads.append(threading.Thread(target=chaos))
        for t in threads:
            t.start()
        for t in threads:
            t.join(800)
        assert not errors, errors
        assert struck == {k: FAULTS_PER_KIND for k in struck}

        # Everything settles once the faults stop.
        for agent in agents.values():
            if not agent.alive():
                agent.start()
        for d, app in apps.items():
            wait_until(drained(app), 180, f"{d}'s outbox to drain", every=0.5)
        for d, app in apps.items():
            wait_until(
                caught_up(app, hq_engine),
                180,
                f"{d}'s replica to catch up",
                every=0.5,
            )
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
            s.execute(select(StoredEvent.event_id, StoredEvent.device_id, StoredEvent.device_seq))
        )
        hq_balances = balances(s)
        assert ledger_sums(s) == {k: v for k, v in hq_balances.items() if k in ledger_sums(s)}
    stored_ids = [row[0] for row in stored]
    assert len(stored_ids) == len(set(stored_ids))
    assert set(stored_ids) == set(outbox_ids(apps["K001"])) | set(outbox_ids(apps["K002"]))
    for d in devices:
        seqs = sorted(seq for _, dev, seq in stored if dev == d)
        assert seqs == list(range(1, len(seqs) + 1)), f"gap or double in {d}'s events"
    for d, app in apps.items():
        assert local_balances(app) == hq_balances, f"{d} disagrees with HQ"
        verified = verify_ledger(app)
        assert verified.ok, verified.problems
        app.close()
