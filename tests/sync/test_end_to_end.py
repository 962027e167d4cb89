"""Two kiosks, HQ and a lane on a real broker: events reach HQ once, replicas agree."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol.link import TlsFiles
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Member, OutboxEvent
from edge.sync.agent import Agent
from hq.lanes import Lane
from hq.ledger import balances, ledger_sums
from hq.models import StoredEvent
from hq.service import HqConfig, HqService
from tests.hq.database import sqlite_hq_url
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until


def hq_config(broker, tmp_path) -> HqConfig:
    ca, cert, key = broker.tls("hq")
    return HqConfig(
        database_url=sqlite_hq_url(tmp_path / "hq.db"),
        broker_port=broker.port,
        ca_file=str(ca),
        cert_file=str(cert),
        key_file=str(key),
        clone_window_min=10,
    )


def pending(app) -> int:
    with app.db.read() as s:
        return s.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.delivered_at.is_(None))
        )


def member_balance(app, member_id: str) -> int | None:
    with app.db.read() as s:
        m = s.get(Member, member_id)
        return None if m is None else m.balance


def test_events_reach_hq_once_and_replicas_agree(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    try:
        reg = register_member(a, "13800138000", consent=True, name="Li")
        accrue_purchase(a, reg.card_no, 12_345, "R-1")
        add_gift(b, "MUG", "Mug", points=50, stock=10)
        wait_until(lambda: pending(a) == 0, 20, "kiosk A's outbox to drain")
        # Store B holds its own members only ...
        assert member_balance(b, reg.member_id) is None

        # ... so when a lane at store B sells to the member registered at store A, B's agent
        # fetches the member from HQ first, and from then on hears of their changes.
        ca, cert, key = broker.tls("L2")
        with Lane("S002", "L2", "127.0.0.1", broker.port, TlsFiles(ca, cert, key)) as lane:
            report = lane.simulate([reg.card_no], 5, rate_per_s=50, deadline_s=30)
        assert report.accepted == 5, report
        redeem_gift(b, reg.card_no, "MUG")
        wait_until(lambda: pending(b) == 0, 20, "kiosk B's outbox to drain")
        expected = member_balance(b, reg.member_id)
        wait_until(lambda: member_balance(a, reg.member_id) == expected, 20, "replica at A")

        with Session(hq.engine) as s:
            ids = list(s.scalars(select(StoredEvent.event_id)))
            assert len(ids) == len(set(ids))
            assert balances(s)[reg.member_id] == expected
            assert ledger_sums(s)[reg.member_id] == expected
            per_device: dict[str, list[int]] = {}
            for dev, seq in s.execute(select(StoredEvent.device_id, StoredEvent.device_seq)):
                per_device.setdefault(dev, []).append(seq)
        for seqs in per_device.values():
            assert sorted(seqs) == list(range(1, len(seqs) + 1))
        for app in (a, b):
            verified = verify_ledger(app)
            assert verified.ok, verified.problems
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()
