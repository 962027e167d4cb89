"""The rules of HQ's coupons: what a coupon takes off a basket, when it can be used, and
which terms a campaign may have."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.domain.coupons import (
    CouponKind,
    Terms,
    campaign_of,
    check_terms,
    coupon_id,
    discount_cents,
    takes_off,
    usable,
)
from edge.domain.errors import InvalidInput, Refusal

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


BASE: dict[CouponKind, dict[str, Any]] = {
    CouponKind.AMOUNT_OFF: {"value_cents": 500},
    CouponKind.THRESHOLD_OFF: {"value_cents": 1000, "threshold_cents": 10_000},
    CouponKind.PERCENT_OFF: {"percent": 15},
    CouponKind.GIFT: {"gift_sku": "RICE5"},
}


def terms(kind: CouponKind = CouponKind.THRESHOLD_OFF, **changes: Any) -> Terms:
    made = Terms(
        "SPRING26",
        "满100减10",
        kind,
        0,
        0,
        0,
        "",
        NOW - timedelta(days=1),
        NOW + timedelta(days=30),
    )
    return replace(made, **{**BASE[kind], **changes})


def test_what_each_kind_takes_off_a_basket():
    assert discount_cents(terms(CouponKind.AMOUNT_OFF), 12_000) == 500
    assert discount_cents(terms(CouponKind.AMOUNT_OFF), 300) == 300  # never past the basket
    assert discount_cents(terms(), 10_000) == 1000  # the threshold itself is enough
    assert discount_cents(terms(CouponKind.PERCENT_OFF), 9_999) == 1499  # whole cents, down
    assert discount_cents(terms(CouponKind.GIFT), 5_000) == 0  # it gives the gift instead


def test_a_threshold_coupon_on_a_smaller_basket_is_refused_with_the_threshold():
    with pytest.raises(Refusal, match=r"100\.00 or more") as refused:
        discount_cents(terms(), 9_999)
    assert refused.value.code == "coupon_below_threshold"


def test_a_negative_basket_or_an_unknown_kind_is_bad_input():
    with pytest.raises(InvalidInput) as bad:
        takes_off("amount_off", 500, 0, 0, -1)
    assert bad.value.code == "bad_amount"
    with pytest.raises(InvalidInput) as bad:
        takes_off("cashback", 500, 0, 0, 1000)
    assert bad.value.code == "bad_kind"


@given(
    kind=st.sampled_from(list(CouponKind)),
    value=st.integers(1, 100_000),
    percent=st.integers(1, 90),
    basket=st.integers(0, 10_000_000),
)
def test_no_coupon_takes_off_more_than_the_basket(kind, value, percent, basket):
    try:
        off = takes_off(kind, value, value + 1, percent, basket)
    except Refusal:
        assert kind == CouponKind.THRESHOLD_OFF and basket < value + 1
        return
    assert 0 <= off <= basket


def test_when_a_coupon_can_be_used():
    usable(terms(), NOW)
    cases = {
        "coupon_not_yet_valid": terms(valid_from=NOW + timedelta(hours=1)),
        "coupon_expired": terms(valid_until=NOW),
        "coupon_campaign_finished": terms(finished=True),
    }
    for code, t in cases.items():
        with pytest.raises(Refusal) as refused:
            usable(t, NOW)
        assert refused.value.code == code


@pytest.mark.parametrize(
    ("kind", "changes", "why"),
    [
        (CouponKind.AMOUNT_OFF, {"value_cents": 0}, "amount off"),
        (CouponKind.THRESHOLD_OFF, {"threshold_cents": 1000}, "threshold"),
        (CouponKind.PERCENT_OFF, {"percent": 91}, "percentage"),
        (CouponKind.GIFT, {"gift_sku": " "}, "SKU"),
        (CouponKind.PERCENT_OFF, {"value_cents": 100}, "takes no value_cents"),
        (CouponKind.AMOUNT_OFF, {"valid_until": NOW - timedelta(days=2)}, "end after"),
        (CouponKind.AMOUNT_OFF, {"title": ""}, "title"),
        (CouponKind.AMOUNT_OFF, {"campaign_id": "bad id"}, "bad id"),
    ],
)
def test_terms_that_make_no_sense_are_refused_in_one_line(kind, changes, why):
    with pytest.raises(InvalidInput, match=why) as bad:
        check_terms(terms(kind, **changes))
    assert "\n" not in str(bad.value)


def test_a_coupon_id_names_its_campaign():
    assert campaign_of(coupon_id("SPRING26", "01JQ8ZK3M4")) == "SPRING26"
    assert campaign_of("01JQ8ZK3M4") is None
    assert campaign_of("SPRING26.") is None
