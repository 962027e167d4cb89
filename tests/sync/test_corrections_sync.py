"""Corrections across the chain, through a real broker, kiosk agents and HQ: a lane's refund
after a redemption leaves the member owing points, flagged at the kiosk, at HQ (with an
alert) and at the other store that holds the member; settled at the desk, all three clear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.config import OFFLINE_DEFAULTS, POINTS_DEFAULTS, parse_config
from edge.protocol import MemberDayPolicy, OfflineRules, PointsRules, Rules
from edge.services.corrections import adjust_points, settle_overdraft
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member, show_member
from edge.services.pushes import rules_state
from edge.services.staff import StaffIdentity
from edge.services.verify import verify_ledger
from edge.storage.models import Purchase
from edge.sync.agent import Agent
from hq.commands import push_rules
from hq.models import Alert, CentralMember
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import caught_up, drained, hq_config
from tests.sync.test_lanes import lane_for

CLERK = StaffIdentity("c1", "clerk")


def open_overdraft(engine, member_id: str) -> tuple[bool, int, bool]:
    """HQ's view: the member's flag, balance, and whether an overdraft alert is open."""
    with Session(engine) as s:
        member = s.get(CentralMember, member_id)
        alert = s.scalar(
            select(Alert.id).where(
                Alert.kind == "overdraft", Alert.subject == member_id, Alert.cleared_at.is_(None)
            )
        )
        assert member is not None
        return member.overdraft_flagged, member.balance, alert is not None


def test_a_lane_refund_after_a_redemption_is_owed_alerted_and_settled(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    lane = lane_for(broker, "S001", "L1")
    try:
        with lane:
            member = register_member(a, "13800138000", consent=True)
            report = lane.simulate([member.card_no], 1, rate_per_s=20, deadline_s=20)
            assert report.accepted == 1, report
            receipt = report.receipts[0]
            with a.db.read() as s:
                bought = s.get(Purchase, receipt)
                assert bought is not None
                amount, earned = bought.amount_cents, bought.points
            wait_until(drained(a), 20, "the purchase at HQ")
            show_member(b, card_no=member.card_no)  # store B fetches the member: holds it now
            # top up so the gift is affordable, then spend everything
            adjust_points(a, member.card_no, 400, "goodwill", "welcome", CLERK)
            add_gift(a, "G", "礼品", earned + 400, 5)
            redeem_gift(a, member.card_no, "G", request_id="q-1")

            answer = lane.refund(receipt, amount, refund_id="RF-1")
            assert answer.ok and (answer.points, answer.balance) == (earned, -earned), answer
            assert answer.overdraft
            again = lane.refund(receipt, amount, refund_id="RF-1")
            assert again.ok and again.duplicate and again.balance == -earned, again
            unknown = lane.refund("NO-SUCH-RECEIPT", 100)
            assert (unknown.ok, unknown.error) == (False, "unknown_receipt"), unknown
            assert "not known here" in unknown.message
            too_much = lane.refund(receipt, 1, refund_id="RF-2")
            assert (too_much.ok, too_much.error) == (False, "refund_too_large"), too_much

            wait_until(drained(a), 20, "the refund at HQ")
            assert open_overdraft(hq.engine, member.member_id) == (True, -earned, True)
            wait_until(caught_up(b, hq.engine), 20, "store B's replica")
            view = show_member(b, card_no=member.card_no)
            assert (view.balance, view.overdraft_flagged) == (-earned, True)

            settle_overdraft(a, member.card_no, "overdraft_written_off", "gift already used", CLERK)
            wait_until(drained(a), 20, "the settlement at HQ")
            assert open_overdraft(hq.engine, member.member_id) == (False, 0, False)

            # the other store's replica follows: settled there too
            wait_until(caught_up(b, hq.engine), 20, "store B's replica")
            view = show_member(b, card_no=member.card_no)
            assert (view.balance, view.overdraft_flagged) == (0, False)
        for app in (a, b):
            report_ = verify_ledger(app)
            assert report_.ok, report_.problems
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()


class ShiftedClock:
    """The real clock, moved forward when the test says so (the agent's clock too)."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


def test_a_member_day_pushed_by_hq_changes_lane_points_from_its_effective_time(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    clock = ShiftedClock()
    data = make_data_dir(tmp_path, broker, "K001", "S001", 1)
    a = AppContext.open(data, config=parse_config((data / "config.toml").read_text()), clock=clock)
    runners = [Runner(hq.run), Runner(Agent(a).run)]
    lane = lane_for(broker, "S001", "L1")
    try:
        with lane:
            member = register_member(a, "13800138000", consent=True)
            start = clock()
            rules = Rules(
                version=3,
                issued_at=start,
                effective_from=start + timedelta(hours=2),
                points=PointsRules(**{**POINTS_DEFAULTS, "points_per_yuan": 1}),
                offline=OfflineRules(**OFFLINE_DEFAULTS),
                member_days=[MemberDayPolicy(weekday=d, multiplier_pct=300) for d in range(7)],
            )
            push_rules(config, rules)
            wait_until(lambda: rules_state(a).next_version == 3, 15, "the rules at the kiosk")

            def earned(receipt: str) -> tuple[int, int]:
                """The points a receipt earned, and the amount in cents."""
                with a.db.read() as s:
                    bought = s.get(Purchase, receipt)
                    assert bought is not None
                    return bought.points, bought.amount_cents

            before = lane.simulate([member.card_no], 1, rate_per_s=20, deadline_s=20)
            assert before.accepted == 1, before
            clock.shift = timedelta(hours=2)  # the effective time has come
            after = lane.simulate([member.card_no], 1, rate_per_s=20, deadline_s=20)
            assert after.accepted == 1, after
            got, cents = earned(before.receipts[0])
            assert got == cents // 100  # the rules before: 1 point a yuan, no member day
            got, cents = earned(after.receipts[0])
            assert got == cents * 3 // 100  # the member day's x3
            assert rules_state(a).in_force == 3 and a.rules_version == 3
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
