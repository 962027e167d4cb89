"""The lane simulator against a real broker, kiosk agents and HQ: it keeps the card list.

A card blocked at the kiosk or by HQ is refused at the till from the first purchase after
the message reached the lane; a card issued at a kiosk (this store's or another's) earns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from edge.protocol import BlocklistUpdate, TierPolicy, Topics
from edge.protocol.link import TlsFiles
from edge.services.cards import replace_card, report_lost_card
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.staff import add_staff
from edge.storage.models import Purchase
from edge.sync.agent import Agent
from hq.commands import publish_once, push_rules
from hq.lanes import Lane
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config
from tests.sync.test_bridge import rules


def lane_for(broker, store: str, lane_id: str, **kwargs) -> Lane:
    ca, cert, key = broker.tls(lane_id)
    return Lane(store, lane_id, "127.0.0.1", broker.port, TlsFiles(ca, cert, key), **kwargs)


def test_lane_refuses_blocked_cards_at_the_till_and_accepts_new_ones(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    lane = lane_for(broker, "S001", "L1")
    far = lane_for(broker, "S002", "L2")  # a lane of the other store
    try:
        with lane, far:
            # A card issued a moment ago at this store's kiosk earns at once.
            here = register_member(a, "13800138000", consent=True, name="Li")
            report = lane.simulate([here.card_no], 3, rate_per_s=20, deadline_s=20)
            assert (report.accepted, report.sent, report.refused_at_till) == (3, 3, {}), report
            assert report.points > 0

            # A card issued at another store is not on this store's lists (it does not hold
            # the member), yet earns here: the kiosk fetches the member from HQ, and from then
            # on the card is on this lane's list.
            there = register_member(b, "13900139000", consent=True, name="Wang")
            wait_until(drained(b), 20, "the registration at HQ")
            assert lane.card_state(there.card_no) is None
            report = lane.simulate([there.card_no], 2, rate_per_s=20, deadline_s=20)
            assert (report.accepted, report.refused_at_till) == (2, {}), report
            assert lane.wait_card_state(there.card_no, "active", 20), "fetched card not listed"

            # Lost at the kiosk: the kiosk tells its lanes, which stop sending at once.
            clerk = add_staff(a, "c1", "clerk", "2580")
            lost_at = time.monotonic()
            report_lost_card(a, here.card_no, clerk)
            assert lane.wait_card_state(here.card_no, "lost", 20), "the block never arrived"
            arrival_s = time.monotonic() - lost_at
            # The other store's lanes hear it through HQ (its blocklist, the other kiosk).
            assert far.wait_card_state(here.card_no, "lost", 20), "never reached store S002"
            report = far.simulate([here.card_no], 2, rate_per_s=50, deadline_s=10)
            assert report.sent == 0 and report.refused_at_till == {"lost": 2}, report
            report = lane.simulate([here.card_no], 4, rate_per_s=50, deadline_s=10)
            assert report.sent == 0 and report.accepted == 0, report
            assert report.refused_at_till == {"lost": 4}, report

            # Its replacement, issued at the kiosk, earns; the balance went with the member.
            change = replace_card(a, here.card_no, clerk)
            assert change.new_card_no is not None
            report = lane.simulate([change.new_card_no], 2, rate_per_s=20, deadline_s=20)
            assert report.accepted == 2 and report.refused_at_till == {}, report

            # HQ blocks the other store's card: refused at the till; unblocked: earns again.
            now = datetime.now(UTC)
            block = BlocklistUpdate(
                update_id="hq-block-1",
                add=[there.card_no],
                reason="fraud",
                issued_at=now,
                expires_at=now + timedelta(hours=1),
            )
            publish_once(config, Topics().blocklist(), block, expiry_s=3600)
            assert lane.wait_card_state(there.card_no, "blocked", 10)
            report = lane.simulate([there.card_no, change.new_card_no], 20, 100, deadline_s=20)
            assert report.refused_at_till.get("blocked", 0) > 0, report
            assert report.accepted == report.sent == 20 - report.refused_at_till["blocked"]
            unblock = block.model_copy(
                update={"update_id": "hq-unblock-1", "add": [], "remove": [there.card_no]}
            )
            publish_once(config, Topics().blocklist(), unblock, expiry_s=3600)
            assert lane.wait_card_state(there.card_no, "active", 10)
            report = lane.simulate([there.card_no], 2, rate_per_s=20, deadline_s=20)
            assert report.accepted == 2 and report.refused_at_till == {}, report

            # An expired blocklist update changes nothing.
            stale = block.model_copy(
                update={"update_id": "hq-stale", "expires_at": now - timedelta(seconds=1)}
            )
            publish_once(config, Topics().blocklist(), stale)
            lane.poll(1.0)
            assert lane.card_state(there.card_no) == "active"

            # Coupons are checked with the kiosk as before: good once, then used.
            add_gift(a, "C10", "10 off", points=1, stock=5, kind="coupon", coupon_value_cents=1000)
            coupon = redeem_gift(a, change.new_card_no, "C10").coupon_codes[0]
            first = lane.check_coupon(coupon)
            assert first.ok and first.value_cents == 1000, first
            again = lane.check_coupon(coupon)
            assert not again.ok and again.error == "coupon_used", again
        wait_until(drained(a), 20, "kiosk A's outbox to drain")
        assert arrival_s < 10
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()


def test_the_card_list_outlives_the_lane_process(broker, tmp_path):
    """A lane restarted with its card file still refuses what it heard was blocked, and
    hears what was published while it was away (its MQTT session is persistent)."""
    config = hq_config(broker, tmp_path)
    cards_file = tmp_path / "L1-cards.json"
    now = datetime.now(UTC)

    def update(update_id: str, card_no: str) -> BlocklistUpdate:
        return BlocklistUpdate(
            update_id=update_id,
            add=[card_no],
            reason="hq",
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )

    with lane_for(broker, "S001", "L1", cards_file=cards_file) as lane:
        publish_once(config, Topics().blocklist(), update("u1", "1000000001"), expiry_s=3600)
        assert lane.wait_card_state("1000000001", "blocked", 10)
    publish_once(config, Topics().blocklist(), update("u2", "1000000002"), expiry_s=3600)
    with lane_for(broker, "S001", "L1", cards_file=cards_file) as lane:
        assert lane.card_state("1000000001") == "blocked"
        assert lane.wait_card_state("1000000002", "blocked", 10)
        report = lane.simulate(["1000000001", "1000000002"], 6, rate_per_s=100, deadline_s=5)
        assert report.sent == 0 and sum(report.refused_at_till.values()) == 6, report


def test_cards_changed_at_the_kiosk_reach_its_lanes_while_hq_is_away(broker, tmp_path):
    """No HQ service at all: the kiosk itself tells its lanes of a new, a lost and a
    replacement card, from its own outbox, and a restarted agent does not tell them twice."""
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(a)
    runner = Runner(agent.run)
    try:
        with lane_for(broker, "S001", "L1") as lane:
            here = register_member(a, "13800138000", consent=True, name="Li")
            assert lane.wait_card_state(here.card_no, "active", 10), "new card never listed"
            clerk = add_staff(a, "c1", "clerk", "2580")
            report_lost_card(a, here.card_no, clerk)
            assert lane.wait_card_state(here.card_no, "lost", 10), "the loss never arrived"
            report = lane.simulate([here.card_no], 3, rate_per_s=50, deadline_s=5)
            assert report.sent == 0 and report.refused_at_till == {"lost": 3}, report
            change = replace_card(a, here.card_no, clerk)
            assert change.new_card_no is not None
            assert lane.wait_card_state(change.new_card_no, "active", 10)
            assert lane.card_state(here.card_no) == "replaced"
            assert not drained(a)()  # none of it has reached HQ
        runner.stop()
        told = agent.local_cards.cursor
        assert told > 0
        assert Agent(a).local_cards.cursor == told  # kept: a restart tells nothing again
    finally:
        runner.stop()
        a.close()


def test_kiosk_lane_simulate_keeps_its_card_list_in_the_cards_file(broker, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    cards_file = tmp_path / "L1-cards.json"
    cards_file.write_text(json.dumps({"cards": {"2900000000018": "lost"}, "updates": []}))
    kiosk = str(Path(sys.executable).parent / "kiosk")
    run = subprocess.run(
        [
            kiosk,
            "lane",
            "--broker-port",
            str(broker.port),
            "--tls-dir",
            str(broker.directory),
            "--store",
            "S001",
            "--lane",
            "L1",
            "--cards-file",
            str(cards_file),
            "simulate",
            "--cards",
            "2900000000018",
            "--count",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["sent"], report["refused_at_till"]) == (0, {"lost": 3}), report


def test_lanes_charge_each_members_tier_price_and_hear_of_new_prices_and_tiers(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    runners = [Runner(hq.run), Runner(Agent(a).run)]
    lane = lane_for(broker, "S001", "L1")

    def price_at_lane(card_no: str, want: tuple[str, int]) -> bool:
        lane.poll(0.2)
        return lane.cards.tiers.get(card_no) == want

    try:
        with lane:
            member = register_member(a, "13800138000", consent=True)
            wait_until(lambda: price_at_lane(member.card_no, ("normal", 0)), 20, "the new card")
            ladder = [
                TierPolicy(code="normal", name_zh="会员", name_en="Member", threshold=0,
                           member_price_pct=5),
                TierPolicy(code="vip", name_zh="贵宾", name_en="VIP", threshold=100_000,
                           multiplier_pct=200, member_price_pct=10),
            ]  # fmt: skip
            push_rules(config, rules(8).model_copy(update={"tiers": ladder}))
            wait_until(lambda: price_at_lane(member.card_no, ("normal", 5)), 20, "new prices")

            report = lane.simulate([member.card_no], 3, rate_per_s=20, deadline_s=20)
            assert report.accepted == 3 and report.member_price_cents > 0, report
            with a.db.read() as s:
                paid = {r: s.get(Purchase, r).amount_cents for r in report.receipts}
            # each price was charged less 5 %, rounded down; the points follow what was paid
            assert paid == {r: p - p * 5 // 100 for r, p in report.prices.items()}
            assert report.member_price_cents == sum(report.prices.values()) - sum(paid.values())

            accrue_purchase(a, member.card_no, 100_000, "BIG-1")  # reaches vip at once
            wait_until(lambda: price_at_lane(member.card_no, ("vip", 10)), 20, "the new tier")
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
