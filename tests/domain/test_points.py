from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.domain.errors import InvalidInput, Refusal
from edge.domain.points import (
    Lot,
    MemberDayRule,
    expiring_soon,
    lot_expiry,
    member_day_multiplier,
    pending,
    plan_consumption,
    purchase_points,
    spendable,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 15, 4, 0, tzinfo=UTC)


def lot(ident, remaining, expires_days, available_days=-1, earned_days=-30):
    return Lot(
        ident,
        remaining,
        NOW + timedelta(days=available_days),
        NOW + timedelta(days=expires_days),
        NOW + timedelta(days=earned_days),
    )


def test_purchase_points_floor_with_multipliers():
    assert purchase_points(12_345, 1, 100) == 123
    assert purchase_points(12_345, 1, 150) == 185  # 185.175
    assert purchase_points(12_345, 1, 150, 200) == 370
    assert purchase_points(99, 1, 100) == 0


@pytest.mark.parametrize("amount", [0, -1, 10**12])
def test_purchase_amount_must_be_plausible(amount):
    with pytest.raises(InvalidInput):
        purchase_points(amount, 1, 100)


def test_member_day_takes_the_best_multiplier():
    rules = [MemberDayRule(8, None, 200), MemberDayRule(None, 6, 150)]
    assert member_day_multiplier(rules, datetime(2026, 3, 8).date()) == 200  # a Sunday, the 8th
    assert member_day_multiplier(rules, datetime(2026, 3, 15).date()) == 150
    assert member_day_multiplier(rules, datetime(2026, 3, 16).date()) == 100


def test_lots_expire_at_the_end_of_the_twelfth_month_store_time():
    earned = datetime(2026, 3, 15, 4, 0, tzinfo=UTC)
    assert lot_expiry(earned, 12, SHANGHAI) == datetime(2027, 3, 31, 16, 0, tzinfo=UTC)
    # 23:30 UTC on 31 March is already 1 April in Shanghai: a month later.
    late = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    assert lot_expiry(late, 12, SHANGHAI) == datetime(2027, 4, 30, 16, 0, tzinfo=UTC)


def test_consumption_takes_the_soonest_expiring_first():
    lots = [lot("b", 50, 60), lot("a", 30, 10), lot("c", 100, 300)]
    assert plan_consumption(lots, 70, NOW) == [("a", 30), ("b", 40)]


def test_pending_and_expired_lots_cannot_be_spent():
    lots = [lot("held", 100, 300, available_days=3), lot("old", 100, -1), lot("ok", 10, 30)]
    assert spendable(lots, NOW) == 10
    assert pending(lots, NOW) == 100
    with pytest.raises(Refusal) as err:
        plan_consumption(lots, 20, NOW)
    assert err.value.code == "insufficient_points"
    assert err.value.details == {"needed": 20, "available": 10, "pending": 100}


@given(
    st.lists(st.tuples(st.integers(1, 500), st.integers(1, 400)), min_size=1, max_size=12),
    st.integers(1, 3000),
)
def test_consumption_plan_invariants(spec, want):
    lots = [lot(f"l{i}", rem, exp) for i, (rem, exp) in enumerate(spec)]
    have = sum(r for r, _ in spec)
    if want > have:
        with pytest.raises(Refusal):
            plan_consumption(lots, want, NOW)
        return
    plan = plan_consumption(lots, want, NOW)
    assert sum(take for _, take in plan) == want
    by_id = {x.id: x for x in lots}
    assert all(0 < take <= by_id[i].remaining for i, take in plan)
    # Every lot used before the last one was used up, and expires no later than any unused lot.
    used = [by_id[i] for i, _ in plan]
    assert all(take == by_id[i].remaining for i, take in plan[:-1])
    unused = [x for x in lots if x.id not in {i for i, _ in plan}]
    if unused:
        assert max(u.expires_at for u in used) <= min(u.expires_at for u in unused)


def test_expiring_soon_groups_by_date():
    lots = [lot("a", 10, 5), lot("b", 20, 5), lot("c", 7, 40), lot("d", 0, 2)]
    soon = expiring_soon(lots, NOW)
    assert [(x.points, x.expires_at) for x in soon] == [
        (30, NOW + timedelta(days=5)),
        (7, NOW + timedelta(days=40)),
    ]
