from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from edge.domain.errors import InvalidInput, PermissionDenied, Refusal
from edge.domain.gifts import GiftTerms, check_redemption, validate_sku
from edge.domain.members import parse_birthday, require_consent, validate_name
from edge.domain.offline import OfflineLimit, check_offline_redemption
from edge.domain.staff import (
    LockoutPolicy,
    Permission,
    after_failure,
    check_not_locked,
    parse_role,
    require_permission,
)
from edge.domain.tiers import Tier, next_tier, review_at_period_end, upgrade_to

LADDER = [
    Tier("normal", "普通", "Member", 0, 100),
    Tier("silver", "银", "Silver", 1000, 120),
    Tier("gold", "金", "Gold", 5000, 150),
]
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_upgrade_is_immediate_and_never_down():
    assert upgrade_to("normal", 1000, LADDER).code == "silver"
    assert upgrade_to("normal", 6000, LADDER).code == "gold"
    assert upgrade_to("gold", 10, LADDER) is None
    assert upgrade_to("silver", 1500, LADDER) is None


def test_period_end_review_can_go_down():
    assert review_at_period_end(10, LADDER).code == "normal"


def test_next_tier_needs():
    assert next_tier("normal", 400, LADDER).missing == 600
    assert next_tier("gold", 0, LADDER) is None


def gift(stock=5, limit=None, active=True):
    return GiftTerms("TOWEL", "毛巾", 50, stock, 1, limit, active)


def test_redemption_costs_price_times_qty():
    assert check_redemption(gift(), 2, 0) == 100


@pytest.mark.parametrize(
    ("terms", "qty", "already", "code"),
    [
        (gift(stock=0), 1, 0, "out_of_stock"),
        (gift(stock=1), 2, 0, "out_of_stock"),
        (gift(limit=2), 1, 2, "limit_reached"),
        (gift(active=False), 1, 0, "gift_inactive"),
    ],
)
def test_redemption_refusals_say_why(terms, qty, already, code):
    with pytest.raises(Refusal) as err:
        check_redemption(terms, qty, already)
    assert err.value.code == code


@pytest.mark.parametrize("qty", [0, -1, 21])
def test_redemption_quantity_is_bounded(qty):
    with pytest.raises(InvalidInput):
        check_redemption(gift(), qty, 0)


@pytest.mark.parametrize("sku", ["", "a b", "x" * 33, "毛巾;DROP"])
def test_bad_skus(sku):
    with pytest.raises(InvalidInput):
        validate_sku(sku)


def test_consent_is_required():
    with pytest.raises(Refusal) as err:
        require_consent(False)
    assert err.value.code == "consent_required"


def test_names_and_birthdays():
    assert validate_name(" 王女士 ") == "王女士"
    assert validate_name("") is None
    with pytest.raises(InvalidInput):
        validate_name("a\x00b")
    today = date(2026, 3, 2)
    assert parse_birthday("1950-03-01", today) == date(1950, 3, 1)
    for bad in ("2026-13-01", "tomorrow", "2027-01-01", "1800-01-01"):
        with pytest.raises(InvalidInput):
            parse_birthday(bad, today)


def test_roles_and_permissions():
    assert parse_role("Supervisor").value == "supervisor"
    with pytest.raises(InvalidInput):
        parse_role("admin")
    require_permission("s1", "supervisor", Permission.DELETE_MEMBER)
    with pytest.raises(PermissionDenied):
        require_permission("c1", "clerk", Permission.DELETE_MEMBER)
    with pytest.raises(PermissionDenied):
        require_permission("t1", "technician", Permission.REPLACE_CARD)


def test_fifth_wrong_pin_locks_for_thirty_minutes():
    policy = LockoutPolicy()
    failed, locked = 0, None
    for _ in range(4):
        failed, locked = after_failure(failed, NOW, policy)
        assert locked is None
    failed, locked = after_failure(failed, NOW, policy)
    assert locked == NOW + timedelta(minutes=30)
    with pytest.raises(PermissionDenied) as err:
        check_not_locked("c1", locked, NOW + timedelta(minutes=29))
    assert err.value.code == "staff_locked"
    check_not_locked("c1", locked, NOW + timedelta(minutes=30))


LIMIT = OfflineLimit(1000, 1500, 3000, timedelta(hours=24))


def test_offline_caps():
    since = NOW - timedelta(hours=1)
    check_offline_redemption(LIMIT, 1000, since, NOW, 500, 2000)
    cases = [
        (1001, 0, 0, "offline_cap_redemption"),
        (600, 1000, 0, "offline_cap_member"),
        (600, 0, 2500, "offline_cap_device"),
    ]
    for points, member, device, code in cases:
        with pytest.raises(Refusal) as err:
            check_offline_redemption(LIMIT, points, since, NOW, member, device)
        assert err.value.code == code


def test_redemption_pauses_after_the_offline_window():
    with pytest.raises(Refusal) as err:
        check_offline_redemption(LIMIT, 1, NOW - timedelta(hours=25), NOW, 0, 0)
    assert err.value.code == "offline_paused"
