"""HQ's coupon campaigns: created with terms that make sense, issued to an audience within
the pool and the per-member limit, given at registration (new members, referrals), used
once in the chain with a second use flagged; on SQLite and PostgreSQL, a race included."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.coupons import HQ_ISSUER, Audience, CouponKind, Terms
from edge.domain.errors import InvalidInput, KioskError, NotFound
from edge.domain.ids import IdFactory
from edge.protocol import CouponAsk, Event, EventBatch
from edge.security.codes import verify_voucher
from hq import personal
from hq.audit import Actor
from hq.coupons import (
    CampaignSpec,
    answer,
    campaigns_document,
    create_campaign,
    finish_campaign,
    issue_campaign,
)
from hq.ledger import CentralLedger
from hq.models import Alert, AuditRecord, Campaign, CampaignCoupon, CentralMember
from tests.hq.database import HQ_VAULT

OPS = Actor("ops")  # who acts at HQ in these tests

ids = IdFactory()
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()


def terms(campaign_id="SPRING", kind=CouponKind.THRESHOLD_OFF, **extra) -> Terms:
    values = {
        "campaign_id": campaign_id,
        "title": "满100减10",
        "kind": kind,
        "value_cents": 1000,
        "threshold_cents": 10000,
        "percent": 0,
        "gift_sku": "",
        "valid_from": T0,
        "valid_until": T0 + timedelta(days=30),
    }
    return Terms(**(values | extra))


def event(kind, device, store, seq, data, at=T0) -> Event:
    return Event(
        event_id=ids.new(), kind=kind, store_id=store, device_id=device, at=at, data=data, seq=seq
    )


def ingest(engine, device, *events):
    batch = EventBatch(device_id=device, batch_id=ids.new(), events=list(events))
    with Session(engine) as s, s.begin():
        return CentralLedger(timedelta(minutes=10), HQ_VAULT).ingest(s, device, batch, T0)


def registered(member, card, seq, tier="normal", referrer=None, device="K001", store="S001"):
    data = {
        "member_id": member,
        "card_no": card,
        "tier": tier,
        "consent_version": "2026-01",
        "entries": [],
    }
    if referrer:
        data["referrer_id"] = referrer
    return event("member.registered", device, store, seq, data)


def create(engine, spec: CampaignSpec, now=T0):
    with Session(engine) as s, s.begin():
        return create_campaign(s, spec, OPS, now).campaign_id


def ask(engine, action, device="K002", store="S002", now=T0 + timedelta(hours=1), **about):
    request = CouponAsk(device_id=device, store_id=store, action=action, **about)
    with Session(engine) as s, s.begin():
        return answer(s, request, device, now, KEY)


def coupons(engine, campaign_id):
    with Session(engine) as s:
        return list(
            s.scalars(select(CampaignCoupon).where(CampaignCoupon.campaign_id == campaign_id))
        )


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"kind": CouponKind.THRESHOLD_OFF, "threshold_cents": 500}, "threshold"),
        ({"kind": CouponKind.AMOUNT_OFF, "value_cents": 0, "threshold_cents": 0}, "amount"),
        ({"kind": CouponKind.PERCENT_OFF, "value_cents": 0, "threshold_cents": 0}, "percentage"),
        ({"kind": CouponKind.GIFT, "value_cents": 0, "threshold_cents": 0}, "gift"),
        ({"kind": CouponKind.AMOUNT_OFF}, "takes no threshold_cents"),
        ({"valid_until": T0}, "end after it starts"),
        ({"campaign_id": "bad id!"}, "bad campaign id"),
        ({"title": ""}, "title"),
    ],
)
def test_terms_that_make_no_sense_are_refused_and_nothing_is_saved(engine, bad, why):
    with pytest.raises(InvalidInput, match=why):
        create(engine, CampaignSpec(terms(**bad), Audience.ALL))
    with Session(engine) as s:
        assert s.scalars(select(Campaign)).all() == []
        assert s.scalars(select(AuditRecord)).all() == []


def test_a_campaign_is_created_issued_and_finished_on_hqs_audit_log(engine):
    members = [ids.new() for _ in range(3)]
    ingest(engine, "K001", *(registered(m, f"10000000{i}", i + 1) for i, m in enumerate(members)))
    create(engine, CampaignSpec(terms(), Audience.ALL, pool_total=10))
    report = issue_campaign(engine, "SPRING", T0, ids, actor=Actor("ops-zhao"))
    issue_campaign(engine, "SPRING", T0, ids, [members[0]], actor=Actor("ops-zhao"))
    with Session(engine) as s, s.begin():
        finish_campaign(s, "SPRING", Actor("ops-qian"), T0 + timedelta(hours=1))
    with Session(engine) as s:
        rows = list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    assert [(r.actor, r.action, r.subject) for r in rows] == [
        ("ops", "campaign.create", "SPRING"),
        ("ops-zhao", "campaign.issue", "SPRING"),
        ("ops-zhao", "campaign.issue", "SPRING"),
        ("ops-qian", "campaign.finish", "SPRING"),
    ]
    created = json.loads(rows[0].after)
    assert (created["audience"], created["pool_total"], created["title"]) == (
        "all",
        10,
        "满100减10",
    )
    assert json.loads(rows[1].after) == {
        "to": "audience",
        "members": 3,
        "issued": report.issued,
        "at_limit": 0,
        "pool_left": report.pool_left,
    }
    assert (json.loads(rows[2].after)["to"], json.loads(rows[2].after)["members"]) == (
        "named members",
        1,
    )
    assert json.loads(rows[3].after)["issued"] == 3


def test_an_audience_gets_one_coupon_each_within_the_pool_and_again_changes_nothing(engine):
    members = [ids.new() for _ in range(5)]
    ingest(
        engine,
        "K001",
        *(
            registered(m, f"10000000{i}", i + 1, tier="gold" if i < 3 else "normal")
            for i, m in enumerate(members)
        ),
    )
    create(engine, CampaignSpec(terms(), Audience.TIER, "gold", pool_total=2))
    first = issue_campaign(engine, "SPRING", T0, ids)
    assert (first.issued, first.pool_left) == (2, 0)
    again = issue_campaign(engine, "SPRING", T0, ids)
    assert again.issued == 0
    issued = coupons(engine, "SPRING")
    assert len(issued) == 2 and {c.member_id for c in issued} <= set(members[:3])

    create(engine, CampaignSpec(terms("ALL5"), Audience.ALL, pool_total=100))
    assert issue_campaign(engine, "ALL5", T0, ids).issued == 5
    report = issue_campaign(engine, "ALL5", T0, ids)
    assert (report.issued, report.at_limit) == (0, 5)
    with pytest.raises(NotFound):
        issue_campaign(engine, "ALL5", T0, ids, [ids.new()])


def test_a_birthday_month_campaign_goes_to_the_members_born_this_month(engine):
    """HQ keeps birthdays sealed; the month it keeps in clear selects the audience in SQL."""
    born = {"march": "1950-03-09", "march_too": "1988-03-31", "april": "1950-04-09"}
    members = {who: ids.new() for who in [*born, "unknown"]}
    events = []
    for seq, (who, member) in enumerate(members.items(), 1):
        e = registered(member, f"2000000{seq}", seq)
        e.data.update(birthday=born.get(who), name=f"会员{seq}")
        events.append(e)
    ingest(engine, "K001", *events)
    with Session(engine) as s:
        kept = s.get(CentralMember, members["march"])
        assert kept is not None and kept.birth_month == 3
        assert personal.birthday_of(HQ_VAULT, kept) == date(1950, 3, 9)
        assert personal.name_of(HQ_VAULT, kept) == "会员1"
    create(engine, CampaignSpec(terms("BDAY"), Audience.BIRTHDAY_MONTH, pool_total=100))
    assert issue_campaign(engine, "BDAY", T0, ids).issued == 2  # T0 is in March
    assert {c.member_id for c in coupons(engine, "BDAY")} == {
        members["march"],
        members["march_too"],
    }


def test_registrations_earn_the_new_member_and_referral_coupons(engine):
    create(engine, CampaignSpec(terms("WELCOME"), Audience.NEW_MEMBERS))
    create(engine, CampaignSpec(terms("REFD"), Audience.REFERRED))
    create(engine, CampaignSpec(terms("REFR"), Audience.REFERRER, per_member_limit=5))
    old, new1, new2 = ids.new(), ids.new(), ids.new()
    ingest(engine, "K001", registered(old, "1000000018", 1))
    ingest(
        engine,
        "K001",
        registered(new1, "1000000026", 2, referrer=old),
        registered(new2, "1000000034", 3, referrer=old),
    )
    assert {c.member_id for c in coupons(engine, "WELCOME")} == {old, new1, new2}
    assert {c.member_id for c in coupons(engine, "REFD")} == {new1, new2}
    assert [c.member_id for c in coupons(engine, "REFR")] == [old, old]


def test_a_coupon_is_used_once_in_the_chain_and_a_second_use_offline_is_flagged(engine):
    member = ids.new()
    ingest(engine, "K001", registered(member, "1000000018", 1))
    create(engine, CampaignSpec(terms(), Audience.ALL))
    issue_campaign(engine, "SPRING", T0, ids)
    wallet = ask(engine, "wallet", member_id=member)
    assert wallet.ok and len(wallet.coupons) == 1
    shown = wallet.coupons[0]
    claims = verify_voucher(KEY.public_key(), shown.code)
    assert (claims.kind, claims.device_id, claims.voucher_id) == (
        "coupon",
        HQ_ISSUER,
        shown.coupon_id,
    )
    assert shown.terms.threshold_cents == 10000

    checked = ask(engine, "check", coupon_id=shown.coupon_id)
    assert checked.ok and checked.terms is not None
    used = ask(engine, "use", coupon_id=shown.coupon_id, ref="R1")
    assert used.ok
    again = ask(engine, "use", device="K001", store="S001", coupon_id=shown.coupon_id, ref="R2")
    assert (again.ok, again.error, again.used_store_id) == (False, "coupon_used", "S002")
    assert ask(engine, "wallet", member_id=member).coupons == []
    unknown = ask(engine, "use", coupon_id="SPRING.NOSUCH")
    assert (unknown.ok, unknown.error) == (False, "unknown_coupon")

    # K002's own event of the use HQ granted is that use; K003's offline one is a second
    def used_event(device, store, ref, offline):
        data = {
            "coupon_id": shown.coupon_id,
            "value_cents": 1000,
            "ref": ref,
            "issuer": HQ_ISSUER,
            "campaign_id": "SPRING",
            "offline": offline,
        }
        return event("coupon.used", device, store, 1, data, T0 + timedelta(hours=2))

    assert ingest(engine, "K002", used_event("K002", "S002", "R1", False)).alerts == []
    assert ingest(engine, "K003", used_event("K003", "S003", "R9", True)).alerts == [
        "coupon_used_twice"
    ]
    with Session(engine) as s:
        alert = s.scalars(select(Alert).where(Alert.kind == "coupon_used_twice")).one()
        assert "S002" in alert.detail and "S003" in alert.detail


def test_a_finished_or_expired_campaign_refuses_its_coupons(engine):
    member = ids.new()
    ingest(engine, "K001", registered(member, "1000000018", 1))
    create(engine, CampaignSpec(terms(), Audience.ALL))
    issue_campaign(engine, "SPRING", T0, ids)
    coupon = coupons(engine, "SPRING")[0].coupon_id
    late = ask(engine, "use", coupon_id=coupon, now=T0 + timedelta(days=31))
    assert (late.ok, late.error) == (False, "coupon_expired")
    with Session(engine) as s, s.begin():
        finish_campaign(s, "SPRING", OPS, T0 + timedelta(hours=1))
        with pytest.raises(KioskError, match="finished already"):
            finish_campaign(s, "SPRING", OPS, T0 + timedelta(hours=1))
    done = ask(engine, "use", coupon_id=coupon)
    assert (done.ok, done.error) == (False, "coupon_campaign_finished")
    with pytest.raises(InvalidInput, match="ended"):
        issue_campaign(engine, "SPRING", T0, ids)
    with Session(engine) as s:
        document = campaigns_document(s, T0 + timedelta(hours=2))
    assert [(c.campaign_id, c.finished) for c in document.campaigns] == [("SPRING", True)]
    assert document.version == 2  # created, finished


def test_two_stores_using_one_coupon_at_the_same_moment_get_it_once(engine):
    member = ids.new()
    ingest(engine, "K001", registered(member, "1000000018", 1))
    create(engine, CampaignSpec(terms(), Audience.ALL))
    issue_campaign(engine, "SPRING", T0, ids)
    coupon = coupons(engine, "SPRING")[0].coupon_id
    results = []
    start = threading.Barrier(2)

    def use(device, store):
        start.wait()
        try:
            results.append(ask(engine, "use", device=device, store=store, coupon_id=coupon))
        except Exception as exc:  # a serialization failure is the other way to lose
            results.append(exc)

    threads = [threading.Thread(target=use, args=a) for a in (("K002", "S002"), ("K003", "S003"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if not isinstance(r, Exception) and r.ok]
    assert len(granted) == 1, results
