"""A store broker bridged to HQ's broker with the shipped bridge configuration.

The kiosk agent and the lane talk to the store's Mosquitto only, HQ to its own; the bridge
(conf.d/bridge-S001.conf, rendered from bridge.template.conf) carries the rest over TLS with
the store's bridge certificate.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol import (
    BlocklistUpdate,
    EventAck,
    OfflineRules,
    PointsRules,
    Rules,
    Topics,
)
from edge.protocol.link import TlsFiles
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.pushes import RULES_VERSION
from edge.services.staff import authenticate_staff
from edge.services.staff_lists import STAFF_LIST_VERSION
from edge.services.tx import get_meta
from edge.storage.models import Card
from edge.sync.agent import Agent
from hq.commands import (
    load_command_key,
    publish_once,
    push_rules,
    push_staff_list,
    send_command,
    sign_command,
)
from hq.lanes import Lane, LaneReport
from hq.ledger import balances
from hq.models import StoredEvent
from hq.service import HqService
from hq.staff import StaffDesk, known_stores
from tests.sync.conftest import Broker, Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import client, drained, hq_config, local_balances, outbox_ids, received

T = Topics()


def lane_on(broker: Broker) -> Lane:
    ca, cert, key = broker.tls("L1")
    return Lane("S001", "L1", "127.0.0.1", broker.port, TlsFiles(ca, cert, key))


def hq_events(engine, device_id: str) -> list[str]:
    with Session(engine) as s:
        return list(
            s.scalars(select(StoredEvent.event_id).where(StoredEvent.device_id == device_id))
        )


def rules(version: int) -> Rules:
    return Rules(
        version=version,
        issued_at=datetime.now(UTC),
        points=PointsRules(
            points_per_yuan=2,
            expiry_months=24,
            pending_days=0,
            checkin_points=5,
            birthday_bonus_points=100,
            referral_bonus_points=0,
        ),
        offline=OfflineRules(
            offline_after_s=60,
            max_points_per_redemption=5000,
            max_points_per_member=10_000,
            max_points_per_device=100_000,
            max_offline_hours=72,
        ),
    )


def test_the_shipped_bridge_carries_the_stores_traffic_and_nothing_else(chain, tmp_path):
    bridge_conf = chain.store.directory / "conf.d" / "bridge-S001.conf"
    assert f"address 127.0.0.1:{chain.hq.port}" in bridge_conf.read_text()
    config = hq_config(chain.hq, tmp_path)  # HQ connects to HQ's broker only
    hq = HqService(config)
    # The kiosk's data directory points at the store broker; its TLS files are the store's.
    app = open_app(make_data_dir(tmp_path, chain.store, "K001", "S001", 1, hq_broker=chain.hq))
    runners = [Runner(hq.run), Runner(Agent(app).run)]
    lane = lane_on(chain.store)
    try:
        with lane:
            # Lane purchases accrue at the kiosk, reach HQ's ledger; HQ's acks come back.
            member = register_member(app, "13800138000", consent=True, name="Li")
            report = lane.simulate([member.card_no], 10, rate_per_s=50, deadline_s=30)
            assert report.accepted == 10 and report.refused_at_till == {}, report
            wait_until(drained(app), 20, "the outbox to drain through the bridge")
            assert sorted(hq_events(hq.engine, "K001")) == sorted(outbox_ids(app))
            with Session(hq.engine) as s:
                assert balances(s)[member.member_id] == local_balances(app)[member.member_id]

            # HQ's pushes cross to the store: rules (retained) and the blocklist.
            push_rules(config, rules(7))
            wait_until(
                lambda: _meta(app, RULES_VERSION) == "7", 15, "HQ's rules to reach the kiosk"
            )
            assert app.config.points.points_per_yuan == 2
            # and the store's own staff list (HQ's broker lets bridge-S001 read S001's only)
            desk = StaffDesk(hq.engine)
            wait_until(lambda: "S001" in _stores(hq.engine), 15, "HQ to know store S001")
            desk.add("S001", "c1", "clerk", "1357")
            push_staff_list(config, desk.staff_list("S001"))
            wait_until(
                lambda: _meta(app, STAFF_LIST_VERSION) == "1", 15, "HQ's staff list at the kiosk"
            )
            assert authenticate_staff(app, "c1", "1357").staff_id == "c1"
            now = datetime.now(UTC)
            block = BlocklistUpdate(
                update_id="hq-b1",
                add=[member.card_no],
                reason="hq",
                issued_at=now,
                expires_at=now + timedelta(hours=1),
            )
            publish_once(config, T.blocklist(), block, expiry_s=3600)
            assert lane.wait_card_state(member.card_no, "blocked", 15), "blocklist at the lane"
            wait_until(lambda: _card_state(app, member.card_no) == "blocked", 15, "kiosk block")
            refused = lane.simulate([member.card_no], 3, rate_per_s=50, deadline_s=5)
            assert refused.sent == 0 and refused.refused_at_till == {"blocked": 3}, refused

            # A signed command from HQ reaches the kiosk and its result comes back.
            key = load_command_key(chain.hq.directory / "hq-command.key")
            result = send_command(config, sign_command(key, "K001", "verify_ledger"), 20)
            assert result.status == "done" and result.detail["ok"] is True, result

            _store_b_is_out_of_reach(chain)
    finally:
        for r in reversed(runners):
            r.stop()
        app.close()


def _stores(engine) -> set[str]:
    with Session(engine) as session:
        return known_stores(session)


def _store_b_is_out_of_reach(chain) -> None:
    """A device on store S001's broker using store S002's kiosk certificate (K002, same CA)
    can neither reach HQ on S002's topics nor hear what HQ sends to S002."""
    observer = client(chain.hq, "hq", [("mck/v1/#", 1)], client_id="hq-watch")
    intruder = client(
        chain.store,
        "K002",
        client_id="K002",
        store_id="S002",
        certs=chain.hq,  # issued for store S002 by the chain's CA
        subs=[(T.command("K002"), 1), (T.ack("K002"), 1), (T.replica("K002"), 1)],
    )
    observer.start()
    intruder.start()
    try:
        assert observer.wait_connected(10) and intruder.wait_connected(10)
        time.sleep(0.3)
        retained = received(observer, 0.3)
        # The bridge's own state, as the fleet monitor sees it at HQ.
        assert [m.payload for m in retained if m.topic == "mck/v1/bridge/S001/state"] == [b"1"]
        forged = EventAck(event_ids=[], at=datetime.now(UTC)).to_bytes()
        sent_at = time.monotonic()
        for topic in (T.events("K002"), T.replica_request("K002"), T.command_result("K002")):
            intruder.publish(topic, forged, qos=1)  # its own topics on the store broker
        intruder.publish(T.lane_purchase("S002", "L2"), forged, qos=1)
        intruder.publish(T.lane_cards("S002"), forged, qos=1)
        time.sleep(0.5)
        for topic in (T.command("K002"), T.ack("K002"), T.replica("K002")):
            observer.publish(topic, b'{"v":1}', qos=1)  # HQ addresses store S002's kiosk
        observer.publish(T.command("K001"), b"not a command", qos=1)  # the control: crosses
        got_hq = received(observer, 3.0)
        got_intruder = received(intruder, 0.5)
        # Control: the store's own telemetry (QoS 0, every 2 s) kept crossing meanwhile.
        later = [m for m in got_hq if m.topic == T.telemetry("K001")]
        assert later and later[-1].received_at > sent_at
        leaked = [m.topic for m in got_hq if "K002" in m.topic and m.payload == forged]
        assert not leaked, leaked
        assert not [m.topic for m in got_hq if "/store/S002/" in m.topic]
        assert got_intruder == [], [m.topic for m in got_intruder]
    finally:
        intruder.close()
        observer.close()


def _meta(app, key: str) -> str | None:
    with app.db.read() as s:
        return get_meta(s, key)


def _card_state(app, card_no: str) -> str | None:
    with app.db.read() as s:
        card = s.get(Card, card_no)
        return None if card is None else str(card.state)


def test_restarting_either_broker_loses_no_event(chain, tmp_path):
    hq = HqService(hq_config(chain.hq, tmp_path))
    app = open_app(make_data_dir(tmp_path, chain.store, "K001", "S001", 1, hq_broker=chain.hq))
    runners = [Runner(hq.run), Runner(Agent(app).run)]
    members = [
        register_member(app, f"1380013800{i}", consent=True, name=f"M{i}").card_no for i in range(3)
    ]
    reports: list[LaneReport] = []
    lane_thread = threading.Thread(
        target=lambda: reports.append(_sell(chain.store, members)), daemon=True
    )
    try:
        lane_thread.start()
        receipt = 0

        def trade(n: int) -> None:
            nonlocal receipt
            for _ in range(n):
                receipt += 1
                accrue_purchase(app, members[receipt % 3], 1000 + receipt, f"T-{receipt}")
                time.sleep(0.05)

        trade(10)
        chain.hq.kill()  # the bridge loses HQ; the store carries on
        trade(10)
        chain.hq.start()
        # The bridge reconnects by itself (restart_timeout), and the backlog goes through.
        wait_until(lambda: _bridge_connections(chain.hq) >= 2, 20, "the bridge to reconnect")
        trade(10)
        wait_until(drained(app), 30, "the outbox to drain after HQ's broker restarted")
        chain.store.kill()  # the store broker goes, and the bridge with it
        trade(10)
        chain.store.start()
        wait_until(lambda: _bridge_connections(chain.hq) >= 3, 20, "the bridge to come back")
        trade(10)
        lane_thread.join(60)
        assert reports and reports[0].accepted == 30, reports
        wait_until(drained(app), 40, "the outbox to drain after both restarts")
        stored = hq_events(hq.engine, "K001")
        assert len(stored) == len(set(stored))
        assert sorted(stored) == sorted(outbox_ids(app))
        with Session(hq.engine) as s:
            seqs = sorted(
                s.scalars(select(StoredEvent.device_seq).where(StoredEvent.device_id == "K001"))
            )
            assert seqs == list(range(1, len(seqs) + 1))
            assert s.scalar(select(func.count()).select_from(StoredEvent)) == len(stored)
            hq_balances = balances(s)
        local = local_balances(app)
        assert {m: hq_balances[m] for m in local} == local
    finally:
        for r in reversed(runners):
            r.stop()
        app.close()


def _bridge_connections(hq_broker: Broker) -> int:
    return hq_broker.log.read_text(errors="replace").count(" as bridge-S001 ")


def _sell(broker: Broker, cards: list[str]) -> LaneReport:
    with lane_on(broker) as lane:
        return lane.simulate(cards, 30, rate_per_s=6, resend_after_s=2.0, deadline_s=50)
