"""Offline stores: serving within the caps, the backlog draining, double spends reconciled."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.errors import Refusal
from edge.services.connectivity import connectivity
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member, show_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Member
from edge.sync.agent import Agent
from hq.ledger import balances
from hq.models import Alert, CentralMember
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import (
    caught_up,
    drained,
    hq_config,
    local_balances,
    pending,
    store_balances,
)
from tests.sync.proxy import CuttableProxy

CAPS = """
[offline]
offline_after_s = 10
max_points_per_redemption = 3000
max_points_per_member = 3000
max_points_per_device = 100000
"""
MEMBERS = 12


def offline(app) -> bool:
    """Whether HQ's silence has passed the kiosk's ``offline_after_s``, as its rules see it."""
    with app.db.read() as session:
        return connectivity(session, app, app.clock()).offline


@pytest.mark.slow
def test_double_spend_at_two_offline_stores_is_flagged_and_capped(broker, tmp_path):
    proxies = {d: CuttableProxy(broker.port) for d in ("K001", "K002")}
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1, port=proxies["K001"].port))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000, port=proxies["K002"].port))
    for app in (a, b):  # the [offline] section goes into each kiosk's config file
        path = app.data_dir / "config.toml"
        path.write_text(path.read_text() + CAPS)
    a.close()
    b.close()
    a, b = open_app(a.data_dir), open_app(b.data_dir)
    hq = HqService(hq_config(broker, tmp_path))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    try:
        members = []
        for app in (a, b):
            add_gift(app, "RICE", "Rice 5 kg", points=1500, stock=1000)
        for m in range(MEMBERS):
            reg = register_member(a, f"1370000{m:04d}", consent=True)
            accrue_purchase(a, reg.card_no, 300_000, f"SEED-{m}")  # 3000 points
            members.append(reg)
        wait_until(lambda: pending(a) == 0, 30, "A's events at HQ")
        # Store B holds its own members only: A's are fetched from HQ when first met there.
        assert not set(local_balances(b)) & {r.member_id for r in members}
        for reg in members:
            assert show_member(b, card_no=reg.card_no).balance == 3000
        wait_until(caught_up(b, hq.engine), 30, "B's replica")
        assert all(local_balances(b)[r.member_id] == 3000 for r in members)

        # Both stores lose HQ: the links are cut and stay cut (the proxies refuse nothing,
        # so the agents are stopped too), and HQ's silence passes offline_after_s.
        for r in runners[1:]:
            r.stop()
        for p in proxies.values():
            p.close()
        wait_until(lambda: offline(a) and offline(b), 30, "both stores offline")

        # Offline, both kiosks keep serving: registration, lookups, redemptions in the caps.
        newcomer = register_member(b, "13900009999", consent=True)
        spent = {"K001": 0, "K002": 0}
        for reg in members:
            for name, app in (("K001", a), ("K002", b)):
                result = redeem_gift(app, reg.card_no, "RICE")  # 1500 each, at both stores
                assert result.offline
                spent[name] += result.points
        # A second redemption would pass the member's offline cap (3000) at one store.
        with pytest.raises(Refusal) as refused:
            redeem_gift(a, members[0].card_no, "RICE", qty=2)
        assert refused.value.code in ("offline_cap_member", "offline_cap_redemption")

        # Back online: new links, new agents.
        for app in (a, b):
            path = app.data_dir / "config.toml"
            text = path.read_text()
            for p in proxies.values():
                text = text.replace(f"broker_port = {p.port}", f"broker_port = {broker.port}")
            path.write_text(text)
        a.close()
        b.close()
        a, b = open_app(a.data_dir), open_app(b.data_dir)
        runners[1:] = [Runner(Agent(a).run), Runner(Agent(b).run)]
        for app in (a, b):
            wait_until(drained(app), 60, "the offline backlog to drain")
        for app in (a, b):
            wait_until(caught_up(app, hq.engine), 60, "replicas")

        with Session(hq.engine) as s:
            central = {m.id: m for m in s.scalars(select(CentralMember))}
            alerts = {x.subject for x in s.scalars(select(Alert).where(Alert.kind == "overdraft"))}
            hq_balances = balances(s)
        cap = 3000
        # Every member spent 1500 at each store out of 3000: exactly at zero, nothing flagged.
        assert all(central[r.member_id].balance == 0 for r in members)
        assert not alerts

        # Now a real double spend: the same 3000 points redeemed twice.
        for reg in members:
            accrue_purchase(a, reg.card_no, 300_000, f"TOPUP-{reg.member_id}")
        wait_until(lambda: pending(a) == 0, 30, "top-ups at HQ")
        wait_until(
            lambda: all(local_balances(b)[r.member_id] > 0 for r in members), 30, "top-ups at B"
        )
        wait_until(caught_up(b, hq.engine), 30, "B's replica")
        with Session(hq.engine) as s:
            before = balances(s)  # the top-up earns silver-tier points: under 6000 each
        for r in runners[1:]:
            r.stop()
        runners[1:] = []
        a.close()
        b.close()
        for app_dir in (a.data_dir, b.data_dir):  # cut again: point at a closed port
            path = app_dir / "config.toml"
            text = path.read_text().replace(f"broker_port = {broker.port}", "broker_port = 9")
            path.write_text(text)
        a, b = open_app(a.data_dir), open_app(b.data_dir)
        runners[1:] = [Runner(Agent(a).run), Runner(Agent(b).run)]
        wait_until(lambda: offline(a) and offline(b), 30, "both stores offline again")
        for reg in members:
            redeem_gift(a, reg.card_no, "RICE", qty=2, request_id=f"A-{reg.member_id}")
            redeem_gift(b, reg.card_no, "RICE", qty=2, request_id=f"B-{reg.member_id}")
        for r in runners[1:]:
            r.stop()
        a.close()
        b.close()
        for app_dir in (a.data_dir, b.data_dir):
            path = app_dir / "config.toml"
            text = path.read_text().replace("broker_port = 9", f"broker_port = {broker.port}")
            path.write_text(text)
        a, b = open_app(a.data_dir), open_app(b.data_dir)
        runners[1:] = [Runner(Agent(a).run), Runner(Agent(b).run)]
        for app in (a, b):
            wait_until(drained(app), 60, "the second backlog to drain")
        for app in (a, b):
            wait_until(caught_up(app, hq.engine), 60, "replicas again")

        with Session(hq.engine) as s:
            central = {m.id: m for m in s.scalars(select(CentralMember))}
            alerts = {x.subject for x in s.scalars(select(Alert).where(Alert.kind == "overdraft"))}
            hq_balances = balances(s)
        for reg in members:
            person = central[reg.member_id]
            assert before[person.id] < 6000
            assert person.balance == before[person.id] - 6000, (person.id, person.balance)
            assert person.overdraft_flagged
            assert -person.balance <= cap  # no overdraft beyond the offline cap
        assert alerts == {r.member_id for r in members}  # 100 % flagged for staff
        assert newcomer.member_id in hq_balances  # the offline registration reached HQ
        assert set(store_balances(hq.engine, "S001")) == {r.member_id for r in members}
        assert set(store_balances(hq.engine, "S002")) == {
            *(r.member_id for r in members),
            newcomer.member_id,
        }
        for app in (a, b):  # each holds its store's members, B the visitors from A too
            assert local_balances(app) == store_balances(hq.engine, app.store_id)
            with app.db.read() as s:
                flagged = {m.id for m in s.scalars(select(Member).where(Member.overdraft_flagged))}
            assert flagged == {r.member_id for r in members}
            verified = verify_ledger(app)
            assert verified.ok, verified.problems
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()
