"""A full disk stops no agent: it holds what it cannot apply and catches up once there is space.

K001's data directory is on a small tmpfs, filled up before its agent starts. The agent must
start, publish the events already in its outbox (it cannot record their attempts or HQ's
acknowledgements), report the full disk to HQ in its telemetry, and hold the other store's
entries unacknowledged; once space is freed, it applies and acknowledges what it held, its
outbox drains and its balances equal HQ's, without the agent ever having stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.sync.agent import Agent
from hq.ledger import balances
from hq.models import FleetDevice, StoredEvent
from hq.service import HqService
from tests.disk import fill, small_tmpfs
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import caught_up, drained, hq_config, local_balances, pending


def _faults(hq: HqService, device_id: str) -> list[str]:
    with Session(hq.engine) as s:
        device = s.get(FleetDevice, device_id)
        return [] if device is None else list(json.loads(device.faults or "[]"))


def _stored(hq: HqService, device_id: str) -> int:
    with Session(hq.engine) as s:
        count = s.scalar(
            select(func.count()).select_from(StoredEvent).where(StoredEvent.device_id == device_id)
        )
        return int(count or 0)


@pytest.mark.slow
def test_an_agent_on_a_full_disk_keeps_running_and_catches_up(broker, tmp_path):
    # 64 MB: once freed, more than the 50 MB under which telemetry calls the disk full
    with small_tmpfs(tmp_path / "disk", "64m") as small_disk:
        _full_disk_and_back(broker, tmp_path, small_disk)


def _full_disk_and_back(broker, tmp_path: Path, small_disk: Path) -> None:
    hq = HqService(hq_config(broker, tmp_path))
    # two kiosks of one store: K001 holds K003's members too
    a = open_app(make_data_dir(small_disk, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K003", "S001", 50_000))
    runners = [Runner(hq.run), Runner(Agent(b).run)]
    agent_a: Runner | None = None
    try:
        here = register_member(a, "13700000001", consent=True)
        accrue_purchase(a, here.card_no, 12_800, "A-1")
        there = register_member(b, "13700000002", consent=True)
        accrue_purchase(b, there.card_no, 25_600, "B-1")
        wait_until(drained(b), 30, "K003's events at HQ")
        ours = pending(a)
        assert ours == 2

        filler = fill(small_disk)
        try:
            agent_a = Runner(Agent(a).run)
            # it publishes what it has and tells HQ its disk is full, while writing nothing
            wait_until(lambda: _stored(hq, "K001") == ours, 30, "K001's events at HQ")
            wait_until(lambda: "storage:disk_full" in _faults(hq, "K001"), 30, "the full disk")
            assert agent_a.thread.is_alive() and agent_a.error is None
            assert pending(a) == ours  # HQ's acknowledgement is held, not applied
            assert there.member_id not in local_balances(a)
        finally:
            filler.unlink()

        # with space again it applies what it held: the acks, then K003's entries
        wait_until(drained(a), 30, "K001's acknowledgements applied")
        wait_until(caught_up(a, hq.engine), 30, "K001's replica")
        with Session(hq.engine) as s:
            assert local_balances(a) == balances(s)
        wait_until(lambda: "storage:disk_full" not in _faults(hq, "K001"), 30, "space again")
        assert agent_a.thread.is_alive() and agent_a.error is None
        report = verify_ledger(a)
        assert report.ok, report.problems
    finally:
        for runner in [*runners, *([agent_a] if agent_a else [])]:
            runner.stop()
        a.close()
        b.close()
