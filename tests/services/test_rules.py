"""HQ's rules document at the kiosk: signed, versioned, in force from its effective time, with
member days and a tier ladder that replace the device's own; kept across a restart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge.app import AppContext
from edge.config import OFFLINE_DEFAULTS, POINTS_DEFAULTS
from edge.protocol import (
    RULES_SIGNING_DOMAIN,
    MemberDayPolicy,
    OfflineRules,
    PointsRules,
    Rules,
    TierPolicy,
)
from edge.services import members, points
from edge.services.pushes import apply_rules, follow_stored_rules, rules_state
from edge.services.status import center_status
from hq.commands import sign_message

HQ = Ed25519PrivateKey.generate()
POINTS = PointsRules(**POINTS_DEFAULTS)
OFFLINE = OfflineRules(**OFFLINE_DEFAULTS)


def rules(version, at, key=HQ, **extra) -> Rules:
    unsigned = Rules(version=version, issued_at=at, points=POINTS, offline=OFFLINE, **extra)
    return sign_message(key, RULES_SIGNING_DOMAIN, unsigned)


def every_day(pct: int) -> list[MemberDayPolicy]:
    return [MemberDayPolicy(weekday=d, multiplier_pct=pct) for d in range(7)]


def test_a_member_day_from_hq_counts_from_its_effective_time(app, clock):
    card = members.register_member(app, "13800138000", True).card_no
    start = clock.now
    push = rules(1, start, effective_from=start + timedelta(hours=1), member_days=every_day(300))
    assert apply_rules(app, push, HQ.public_key()).applied
    assert points.accrue_purchase(app, card, 10_000, "R-1").points == 100  # not yet
    state = rules_state(app)
    assert (state.in_force, state.next_version, state.next_from) == (
        0,
        1,
        start + timedelta(hours=1),
    )
    clock.advance(hours=1)
    assert points.accrue_purchase(app, card, 10_000, "R-2").points == 300
    assert (app.rules_version, rules_state(app).in_force) == (1, 1)
    assert "HQ's version 1 in force" in _status_line(app)


def _status_line(app) -> str:
    from edge.cli.audit_commands import render_status

    return render_status(center_status(app))


def test_rules_not_signed_by_hq_change_nothing(app, clock):
    forged = rules(1, clock.now, key=Ed25519PrivateKey.generate(), member_days=every_day(500))
    unsigned = forged.model_copy(update={"signature": ""})
    for push, key in [(forged, HQ.public_key()), (unsigned, HQ.public_key()), (forged, None)]:
        outcome = apply_rules(app, push, key)
        assert (outcome.applied, outcome.reason) == (False, "bad signature")
    assert rules_state(app).in_force == 0 and app.member_days == []
    tampered = rules(2, clock.now).model_copy(update={"version": 3})
    assert not apply_rules(app, tampered, HQ.public_key()).applied


def test_hq_tiers_replace_the_ladder_and_an_older_version_is_ignored(app, clock):
    ladder = [
        TierPolicy(code="basic", name_zh="普通", name_en="Basic", threshold=0),
        TierPolicy(
            code="vip",
            name_zh="贵宾",
            name_en="VIP",
            threshold=50_000,
            multiplier_pct=200,
            member_price_pct=5,
        ),
    ]
    assert apply_rules(app, rules(5, clock.now, tiers=ladder), HQ.public_key()).applied
    assert [(t.code, t.member_price_pct) for t in app.ladder] == [("basic", 0), ("vip", 5)]
    older = rules(4, clock.now, tiers=ladder[:1])
    assert apply_rules(app, older, HQ.public_key()).reason == "not newer"
    assert len(app.ladder) == 2


def test_a_restart_before_the_effective_time_keeps_the_rules_in_force(make_app, clock):
    app = make_app()
    now = clock.now
    assert apply_rules(app, rules(1, now, member_days=every_day(200)), HQ.public_key()).applied
    later = rules(2, now, effective_from=now + timedelta(days=1), member_days=every_day(400))
    assert apply_rules(app, later, HQ.public_key()).applied
    assert app.member_days[0].multiplier_pct == 200
    again = AppContext.open(app.data_dir, config=app.config.__class__(), clock=clock)
    try:
        assert follow_stored_rules(again, 0) == 2
        assert again.member_days[0].multiplier_pct == 200 and again.rules_version == 1
        clock.advance(days=1)
        card = members.register_member(again, "13900139000", True).card_no
        assert points.accrue_purchase(again, card, 10_000, "R-1").points == 400
        assert again.rules_version == 2
    finally:
        again.close()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"member_days": [{"weekday": 2, "day_of_month": 8}]}, "exactly one of"),
        ({"tiers": [{"code": "a", "name_zh": "甲", "name_en": "A", "threshold": 5}]}, "first tier"),
        ({"tiers": []}, "at least 1"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_a_bad_rules_document_is_refused_whole(clock, extra, said):
    body = {
        "version": 1,
        "issued_at": clock.now.isoformat(),
        "points": POINTS.model_dump(),
        "offline": OFFLINE.model_dump(),
        **extra,
    }
    with pytest.raises(ValidationError) as err:
        Rules.model_validate(body)
    assert said in str(err.value)
