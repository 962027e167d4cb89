"""The members desk: find a member, read their ledger, adjust within the desk's limit and
beyond it with a supervisor's approval, settle an overdraft, merge, block a card."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from edge.domain.cards import card_number
from edge.protocol import BlocklistUpdate, Topics
from edge.security.personal import PhoneVault
from hq.accounts import Role
from hq.ledger import raise_alert
from hq.member_desk import LARGE_ADJUSTMENT
from hq.models import (
    Alert,
    AuditRecord,
    CentralCard,
    CentralEntry,
    CentralMember,
    FeedItem,
    HqAdjustment,
)
from hq.web.core import Console
from tests.sync.helpers import arriving, client, hq_config
from tests.web.conftest import Web, csrf_of, refused

LOOKUP = PhoneVault(secrets.token_bytes(32), secrets.token_bytes(32))
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
CARD = {n: card_number(100_000 + n) for n in range(1, 10)}


def add_member(web: Web, member_id: str, card_no: str, points: list[int], phone: str = "") -> None:
    """A member as HQ holds them after their store's events: entries and their balance."""
    with web.console.tx() as s:
        s.add(
            CentralMember(
                id=member_id, store_id="S001", tier="silver", phone_masked="138****0000",
                balance=sum(points), overdraft_flagged=sum(points) < 0, deleted=False,
                created_at=T0, updated_at=T0,
                phone_hash=LOOKUP.lookup_hash(phone) if phone else None,
            )
        )  # fmt: skip
        s.add(CentralCard(card_no=card_no, member_id=member_id, state="active", store_id="S001"))
        for n, p in enumerate(points):
            s.add(
                CentralEntry(
                    id=f"{member_id[:20]}E{n:05d}", member_id=member_id,
                    kind="purchase" if p > 0 else "redemption", points=p, lot_id=None,
                    ref=f"r{n}", store_id="S001", device_id="K001",
                    at=T0 + timedelta(hours=n), event_id=f"{member_id[:20]}V{n:05d}",
                )
            )  # fmt: skip
        if sum(points) < 0:
            raise_alert(s, "overdraft", member_id, "balance below zero", T0, "S001")


def balance(web: Web, member_id: str) -> int:
    with web.session() as s:
        return int(s.scalar(select(CentralMember.balance).where(CentralMember.id == member_id)))


def test_find_a_member_by_card_id_or_phone_and_read_their_ledger(web: Web) -> None:
    web.console.phone_lookup = LOOKUP.lookup_hash
    web.account("mia", Role.MEMBER_DESK)
    add_member(web, "01JMEMBERAAAAAAAAAAAAAAAAA", CARD[1], [300, 200, -100], "13800138000")
    desk = web.client("mia")
    for q in (CARD[1], "01jmemberaaaaaaaaaaaaaaaaa", "138 0013 8000"):
        found = desk.get("/members", params={"q": q})
        assert found.status_code == 303, q
        assert found.headers["location"] == "/members/01JMEMBERAAAAAAAAAAAAAAAAA"
    page = desk.get("/members/01JMEMBERAAAAAAAAAAAAAAAAA").text
    assert "400" in page and "138****0000" in page and "13800138000" not in page
    assert page.count("<tr><td>2026-11-01") == 3  # the three ledger entries
    missing = desk.get("/members", params={"q": "13900000000"})
    assert missing.status_code == 200 and "没有会员使用这个手机号" in missing.text


def test_adjust_within_the_limit_and_beyond_it_with_approval(web: Web) -> None:
    web.account("mia", Role.MEMBER_DESK)
    web.account("sam", Role.SUPERVISOR)
    web.account("sue", Role.SUPERVISOR)
    member = "01JMEMBERBBBBBBBBBBBBBBBBB"
    add_member(web, member, CARD[2], [500])
    desk = web.client("mia")
    token = csrf_of(desk, "/members")
    small = desk.post(
        f"/members/{member}/adjust",
        data={"csrf": token, "points": "50", "reason": "missed_points", "note": "小票 0042 漏积分"},
    )
    assert small.status_code == 303
    assert balance(web, member) == 550
    large = desk.post(
        f"/members/{member}/adjust",
        data={
            "csrf": token,
            "points": str(LARGE_ADJUSTMENT + 1),
            "reason": "goodwill",
            "note": "投诉补偿",
        },
    )
    assert large.status_code == 303 and balance(web, member) == 550  # waits
    with web.session() as s:
        pending = s.scalar(select(HqAdjustment).where(HqAdjustment.state == "pending"))
        assert pending is not None and pending.requested_by == "mia"
    # the desk cannot approve; a supervisor can, but not their own request
    assert (
        desk.post(f"/adjustments/{pending.adjustment_id}/approve", data={"csrf": token}).status_code
        == 403
    )
    sam = web.client("sam")
    approved = sam.post(
        f"/adjustments/{pending.adjustment_id}/approve", data={"csrf": csrf_of(sam)}
    )
    assert approved.status_code == 303 and balance(web, member) == 550 + LARGE_ADJUSTMENT + 1
    again = sam.post(f"/adjustments/{pending.adjustment_id}/approve", data={"csrf": csrf_of(sam)})
    assert refused(again)
    # a supervisor's own large adjustment applies at once; rejecting another's changes nothing
    sam.post(
        f"/members/{member}/adjust",
        data={"csrf": csrf_of(sam), "points": "-1500", "reason": "correction", "note": "重复入账"},
    )
    assert balance(web, member) == 550 + LARGE_ADJUSTMENT + 1 - 1500
    desk.post(
        f"/members/{member}/adjust",
        data={"csrf": token, "points": "1500", "reason": "goodwill", "note": "错误"},
    )
    with web.session() as s:
        second = s.scalar(select(HqAdjustment).where(HqAdjustment.state == "pending"))
    sue = web.client("sue")
    sue.post(f"/adjustments/{second.adjustment_id}/reject", data={"csrf": csrf_of(sue)})
    with web.session() as s:
        entries = s.scalars(
            select(CentralEntry.points).where(
                CentralEntry.member_id == member, CentralEntry.kind == "adjustment"
            )
        ).all()
        assert sorted(entries) == [-1500, 50, LARGE_ADJUSTMENT + 1]
        total = s.scalar(
            select(func.sum(CentralEntry.points)).where(CentralEntry.member_id == member)
        )
        assert total == balance(web, member)  # the balance is the sum of the ledger
        assert (
            s.scalar(select(func.count()).select_from(FeedItem).where(FeedItem.member_id == member))
            == 3
        )
        actions = s.scalars(select(AuditRecord.action).where(AuditRecord.subject == member)).all()
    assert actions == [
        "member.adjust",
        "member.adjust.request",
        "member.adjust.approve",
        "member.adjust",
        "member.adjust.request",
        "member.adjust.reject",
    ]


@pytest.mark.parametrize(
    ("points", "reason", "note"),
    [("abc", "goodwill", "x"), ("0", "goodwill", "x"), ("10", "no_such", "x"),
     ("10", "goodwill", " "), ("-900", "correction", "below zero")],
)  # fmt: skip
def test_a_bad_adjustment_says_why_and_changes_nothing(
    web: Web, points: str, reason: str, note: str
) -> None:
    web.account("mia", Role.MEMBER_DESK)
    member = "01JMEMBERCCCCCCCCCCCCCCCCC"
    add_member(web, member, CARD[3], [500])
    desk = web.client("mia")
    response = desk.post(
        f"/members/{member}/adjust",
        data={"csrf": csrf_of(desk, "/members"), "points": points, "reason": reason, "note": note},
    )
    assert response.status_code == 303 and refused(response)
    assert balance(web, member) == 500
    with web.session() as s:
        assert s.scalar(select(func.count()).select_from(HqAdjustment)) == 0


def test_settle_an_overdraft(web: Web) -> None:
    web.account("mia", Role.MEMBER_DESK)
    member = "01JMEMBERDDDDDDDDDDDDDDDDD"
    add_member(web, member, CARD[4], [100, -220])
    desk = web.client("mia")
    page = desk.get(f"/members/{member}").text
    assert 'value="120"' in page  # the form offers what settles it
    token = csrf_of(desk, "/members")
    wrong = desk.post(
        f"/members/{member}/adjust",
        data={"csrf": token, "points": "100", "reason": "overdraft_settled", "note": "现金补足"},
    )
    assert refused(wrong) and balance(web, member) == -120
    desk.post(
        f"/members/{member}/adjust",
        data={"csrf": token, "points": "120", "reason": "overdraft_settled", "note": "现金补足"},
    )
    assert balance(web, member) == 0
    with web.session() as s:
        m = s.get(CentralMember, member)
        assert m is not None and not m.overdraft_flagged
        alert = s.scalar(select(Alert).where(Alert.kind == "overdraft", Alert.subject == member))
        assert alert is not None and alert.cleared_at is not None


def test_merge_a_duplicate_from_the_desk(web: Web) -> None:
    web.account("sam", Role.SUPERVISOR)
    web.account("mia", Role.MEMBER_DESK)
    add_member(web, "01JMEMBEREEEEEEEEEEEEEEEEE", CARD[5], [300])
    add_member(web, "01JMEMBERFFFFFFFFFFFFFFFFF", CARD[6], [40])
    desk = web.client("mia")
    form = {"absorb": CARD[6], "old_cards": "block", "note": "同一人两张卡"}
    denied = desk.post(
        "/members/01JMEMBEREEEEEEEEEEEEEEEEE/merge", data={"csrf": csrf_of(desk), **form}
    )
    assert denied.status_code == 403
    sam = web.client("sam")
    merged = sam.post(
        "/members/01JMEMBEREEEEEEEEEEEEEEEEE/merge", data={"csrf": csrf_of(sam), **form}
    )
    assert merged.status_code == 303
    assert balance(web, "01JMEMBEREEEEEEEEEEEEEEEEE") == 340
    with web.session() as s:
        card = s.get(CentralCard, CARD[6])
        assert card is not None and card.state == "blocked"
        assert "member.merge" in s.scalars(select(AuditRecord.action)).all()


def test_block_a_card_at_every_store(broker, tmp_path: Path, web: Web) -> None:
    config = hq_config(broker, tmp_path, database_url=web.config.database_url)
    web.console = Console(config, clock=web.clock)
    web.account("mia", Role.MEMBER_DESK)
    add_member(web, "01JMEMBERGGGGGGGGGGGGGGGGG", CARD[7], [10])
    kiosk = client(broker, "K001", [(Topics().blocklist(), 1)])
    kiosk.start()
    try:
        assert kiosk.wait_connected(10)
        desk = web.client("mia")
        done = desk.post(
            f"/cards/{CARD[7]}/block", data={"csrf": csrf_of(desk), "reason": "卡片遗失"}
        )
        assert done.status_code == 303 and not refused(done)
        update = next(BlocklistUpdate.model_validate_json(m.payload) for m in arriving(kiosk, 15))
        assert update.add == [CARD[7]]
    finally:
        kiosk.close()
    with web.session() as s:
        card = s.get(CentralCard, CARD[7])
        assert card is not None and card.state == "blocked"
    # blocked already: a refusal, nothing published again
    again = desk.post(f"/cards/{CARD[7]}/block", data={"csrf": csrf_of(desk), "reason": "x"})
    assert refused(again)


def test_the_members_desk_in_the_browser(served, browser) -> None:
    from tests.web.test_browser import shot, sign_in

    web = served.web
    web.account("mia", Role.MEMBER_DESK)
    member = "01JMEMBERHHHHHHHHHHHHHHHHH"
    add_member(web, member, CARD[8], [320, 80, -150])
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, served.url, "mia")
    page.goto(served.url + "/members")
    page.fill("input[name=q]", CARD[8])
    page.click(".filters button")
    page.wait_for_url(f"**/members/{member}")
    form = page.locator("#adjust-form")
    form.locator("input[name=points]").fill("30")
    form.locator("select[name=reason]").select_option("missed_points")
    form.locator("input[name=note]").fill("小票 0815 漏积分")
    form.locator("button").click()
    page.wait_for_selector(".flash.ok")
    assert "280" in page.locator(".balance").inner_text()
    assert balance(web, member) == 280
    shot(page, "member")
    context.close()
