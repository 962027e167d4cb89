"""Property-based: any sequence of member-center operations keeps the ledger's invariants."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import func, select

from edge.app import AppContext
from edge.config import parse_config
from edge.domain.errors import KioskError
from edge.services import gifts, members, points
from edge.services.verify import verify_ledger
from edge.storage.models import Gift, LedgerEntry, Member, PointsLot, Redemption
from tests.conftest import SteppingClock

CONFIG = """
[points]
pending_days = 3
[[points.member_days]]
weekday = 2
multiplier_pct = 200
"""
PHONES = ["13800138000", "13900139000", "13700137000"]
INITIAL_STOCK = {"A": 5, "B": 2}


class MemberCenterMachine(RuleBasedStateMachine):
    """Random streams of accruals, redemptions (with retries), check-ins, expiry and time."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="kiosk-prop-"))
        self.clock = SteppingClock(datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
        self.app = AppContext.open(self.tmp, config=parse_config(CONFIG), clock=self.clock)
        self.cards: list[str] = []
        self.requests: dict[str, int] = {}
        self.receipts = 0

    @initialize()
    def setup(self) -> None:
        for phone in PHONES:
            self.cards.append(members.register_member(self.app, phone, True).card_no)
        gifts.add_gift(self.app, "A", "毛巾", 120, INITIAL_STOCK["A"], low_stock=1)
        gifts.add_gift(self.app, "B", "雨伞", 400, INITIAL_STOCK["B"], per_member_limit=1)

    @rule(who=st.integers(0, 2), cents=st.integers(1, 300_000))
    def accrue(self, who: int, cents: int) -> None:
        self.receipts += 1
        points.accrue_purchase(self.app, self.cards[who], cents, f"R{self.receipts}")

    @rule(
        who=st.integers(0, 2),
        sku=st.sampled_from(["A", "B"]),
        qty=st.integers(1, 3),
        retry=st.booleans(),
    )
    def redeem(self, who: int, sku: str, qty: int, retry: bool) -> None:
        rid = f"Q{len(self.requests)}"
        try:
            first = gifts.redeem_gift(self.app, self.cards[who], sku, qty, rid)
        except KioskError:
            return
        self.requests[rid] = first.points
        if retry:
            again = gifts.redeem_gift(self.app, self.cards[who], sku, qty, rid)
            assert again.redemption_id == first.redemption_id

    @rule(who=st.integers(0, 2))
    def check_in(self, who: int) -> None:
        try:
            points.check_in(self.app, self.cards[who])
        except KioskError as exc:
            assert exc.code == "already_checked_in"

    @rule(days=st.integers(0, 200))
    def time_passes(self, days: int) -> None:
        self.clock.advance(days=days, hours=1)

    @rule()
    def expire(self) -> None:
        points.expire_points(self.app)
        with self.app.db.read() as s:
            still_open = s.scalar(
                select(func.count())
                .select_from(PointsLot)
                .where(PointsLot.expires_at <= self.clock(), PointsLot.remaining > 0)
            )
        assert still_open == 0

    @invariant()
    def ledger_adds_up(self) -> None:
        report = verify_ledger(self.app)
        assert report.ok, report.problems

    @invariant()
    def balances_and_stock(self) -> None:
        with self.app.db.read() as s:
            assert (s.scalar(select(func.min(Member.balance))) or 0) >= 0
            for sku, initial in INITIAL_STOCK.items():
                gift = s.get(Gift, sku)
                if gift is None:
                    continue
                redeemed = s.scalar(
                    select(func.coalesce(func.sum(Redemption.qty), 0)).where(Redemption.sku == sku)
                )
                assert gift.stock >= 0 and gift.stock + (redeemed or 0) == initial
            # Each redemption request applied once: one redemption row per request id.
            assert s.scalar(select(func.count()).select_from(Redemption)) == len(self.requests)
            spent = -(
                s.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
                        LedgerEntry.kind == "redemption"
                    )
                )
                or 0
            )
            assert spent == sum(self.requests.values())

    def teardown(self) -> None:
        self.app.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


MemberCenterMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMemberCenter = MemberCenterMachine.TestCase
