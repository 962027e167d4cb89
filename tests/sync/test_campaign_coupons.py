"""A coupon of an HQ campaign through a real Mosquitto, HQ, two stores' kiosk agents and
their lanes: the campaigns document reaches the kiosks signed, the member's wallet shows the
coupon at any store, a lane of store A takes it once and store B's lane is refused; a forged
coupon and one of a finished campaign are refused and change nothing; with HQ down a kiosk
accepts one within its offline cap and HQ flags the second use when it hears of it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.coupons import HQ_ISSUER, Audience, CouponKind, Terms
from edge.domain.errors import KioskError
from edge.domain.ids import IdFactory
from edge.protocol.link import TlsFiles
from edge.security.codes import sign_voucher
from edge.services.coupons import member_wallet, take_coupon
from edge.services.members import register_member
from edge.services.pushes import stored_campaigns
from edge.services.verify import verify_ledger
from edge.storage.models import AuditRecord, HqCouponUse, OutboxEvent
from edge.sync.agent import Agent
from hq.audit import Actor
from hq.commands import push_campaigns
from hq.coupons import CampaignSpec, campaigns_document, create_campaign, finish_campaign
from hq.coupons import issue_campaign as issue
from hq.lanes import Lane
from hq.ledger import balances, ledger_sums
from hq.models import Alert, CampaignCoupon, CentralMember
from hq.service import HqService
from tests.cli.test_console import Console
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config, row_counts

OPS = Actor("ops")  # who acts at HQ in these tests


def lane_for(broker, store: str, lane_id: str) -> Lane:
    ca, cert, key = broker.tls(lane_id)
    return Lane(store, lane_id, "127.0.0.1", broker.port, TlsFiles(ca, cert, key))


def has_campaigns(app: AppContext, version: int) -> Callable[[], bool]:
    def check() -> bool:
        with app.db.read() as session:
            document = stored_campaigns(session)
        return document is not None and document.version >= version

    return check


def counts(app: AppContext) -> tuple[int | None, ...]:
    return row_counts(app, HqCouponUse, AuditRecord, OutboxEvent)


def test_an_hq_coupon_is_taken_once_in_the_chain(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    lane_a, lane_b = lane_for(broker, "S001", "L1"), lane_for(broker, "S002", "L2")
    now = datetime.now(UTC)

    def publish() -> int:
        with Session(hq.engine) as s:
            return push_campaigns(config, campaigns_document(s, datetime.now(UTC))).version

    def terms(campaign_id: str) -> Terms:
        return Terms(
            campaign_id, "满100减10", CouponKind.THRESHOLD_OFF, 1000, 10_000, 0, "",
            now - timedelta(hours=1), now + timedelta(days=30),
        )  # fmt: skip

    try:
        with lane_a, lane_b:
            member = register_member(a, "13800138000", consent=True)
            wait_until(drained(a), 20, "the registration at HQ")
            with Session(hq.engine) as s, s.begin():
                for campaign_id in ("SPRING", "AUTUMN"):
                    create_campaign(s, CampaignSpec(terms(campaign_id), Audience.ALL), OPS, now)
            assert issue(hq.engine, "SPRING", now, IdFactory()).issued == 1
            assert issue(hq.engine, "AUTUMN", now, IdFactory()).issued == 1
            version = publish()
            for kiosk in (a, b):
                wait_until(has_campaigns(kiosk, version), 20, "the campaigns at the kiosk")

            # The wallet shows both coupons at the member's store and at the other one.
            wallet = member_wallet(a, member.member_id)
            assert wallet.reachable and len(wallet.coupons) == 2
            assert len(member_wallet(b, member.member_id).coupons) == 2
            spring = next(c for c in wallet.coupons if c.terms.campaign_id == "SPRING")

            # A lane of store A takes it; a lane of store B is refused: used at S001.
            # 满100减10 on a basket of 99.99: refused at the till and still the member's.
            small, off = lane_a.take_coupon(spring.code, 9_999)
            assert (small.ok, small.error, off) == (False, "coupon_below_threshold", 0), small
            taken, off = lane_a.take_coupon(spring.code, 12_345)
            assert off == 1000
            assert taken.ok and (taken.kind, taken.value_cents, taken.threshold_cents) == (
                "threshold_off",
                1000,
                10_000,
            ), taken
            assert taken.campaign_id == "SPRING" and not taken.offline
            before = counts(b)
            refused = lane_b.check_coupon(spring.code)
            assert (refused.ok, refused.error) == (False, "coupon_used"), refused
            assert "S001" in refused.message
            assert counts(b) == before
            again = lane_a.check_coupon(spring.code)
            assert (again.ok, again.error) == (False, "coupon_used")
            assert [c.terms.campaign_id for c in member_wallet(b, member.member_id).coupons] == [
                "AUTUMN"
            ]

            # The console at store B: the same wallet, and the same refusal, in one line.
            console = Console(b.data_dir)
            listed = console.json("member", "coupons", "--card", member.card_no)
            assert [c["terms"]["campaign_id"] for c in listed["coupons"]] == ["AUTUMN"]
            before = counts(b)  # the console fetched the member of store A to this kiosk
            line = console.fails("gift", "use-coupon", spring.code, "--ref", "R-9")
            assert "used at S001" in line
            assert counts(b) == before

            # A forged coupon (not HQ's key) is refused at the till; nothing changes.
            forged = sign_voucher(Ed25519PrivateKey.generate(), "coupon", "SPRING.X", HQ_ISSUER)
            bad = lane_b.check_coupon(forged)
            assert (bad.ok, bad.error) == (False, "code_bad_signature")
            assert counts(b) == before

            # A finished campaign's coupon is refused once the document says so.
            autumn = next(c for c in wallet.coupons if c.terms.campaign_id == "AUTUMN")
            with Session(hq.engine) as s, s.begin():
                finish_campaign(s, "AUTUMN", OPS, datetime.now(UTC))
            version = publish()
            wait_until(has_campaigns(b, version), 20, "the finished campaign at the kiosk")
            before = counts(b)  # the document's own audit record is in
            done = lane_b.check_coupon(autumn.code)
            assert (done.ok, done.error) == (False, "coupon_campaign_finished")
            assert counts(b) == before

            wait_until(drained(a), 20, "store A's use at HQ")
            with Session(hq.engine) as s:
                used = s.scalars(
                    select(CampaignCoupon).where(CampaignCoupon.campaign_id == "SPRING")
                ).one()
                assert (used.used_store_id, used.used_device_id) == ("S001", "K001")
                assert s.scalar(select(func.count()).select_from(Alert)) == 0
                sums = ledger_sums(s)  # HQ's reconciliation: each balance is its entries' sum
                assert all(sums.get(m, 0) == v for m, v in balances(s).items())
            for kiosk in (a, b):
                assert verify_ledger(kiosk).ok
    finally:
        for r in runners:
            r.stop()
        for r in runners:
            assert r.error is None
        a.close()
        b.close()
        hq.engine.dispose()


def test_offline_a_kiosk_accepts_within_its_cap_and_hq_flags_a_second_use(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    a.config = a.config.model_copy(
        update={"offline": a.config.offline.model_copy(update={"max_hq_coupons": 1})}
    )
    hq_runner = Runner(hq.run)
    runners = [hq_runner, Runner(Agent(a).run), Runner(Agent(b).run)]
    now = datetime.now(UTC)
    try:
        member = register_member(a, "13800138000", consent=True)
        wait_until(drained(a), 20, "the registration at HQ")
        spec = CampaignSpec(
            Terms(
                "CAP", "立减5元", CouponKind.AMOUNT_OFF, 500, 0, 0, "",
                now - timedelta(hours=1), now + timedelta(days=1),
            ),
            Audience.ALL,
            per_member_limit=2,
        )  # fmt: skip
        with Session(hq.engine) as s, s.begin():
            create_campaign(s, spec, OPS, now)
        assert issue(hq.engine, "CAP", now, IdFactory()).issued == 1
        assert issue(hq.engine, "CAP", now, IdFactory(), [member.member_id]).issued == 1
        with Session(hq.engine) as s:
            version = push_campaigns(config, campaigns_document(s, datetime.now(UTC))).version
            assert s.get(CentralMember, member.member_id) is not None
        wait_until(has_campaigns(a, version), 20, "the campaigns at the kiosk")
        first, second = (c.code for c in member_wallet(a, member.member_id).coupons)

        # B takes the first while HQ answers; then HQ stops answering.
        assert not take_coupon(b, first, "B-1").offline
        hq_runner.stop()
        offline = take_coupon(a, first, "A-1")  # A decides alone: accepted within its cap
        assert offline.offline and offline.value_cents == 500
        before = counts(a)
        with pytest.raises(KioskError) as capped:
            take_coupon(a, second, "A-2")
        assert capped.value.code == "offline_coupon_cap"
        assert counts(a) == before

        # HQ back: A's offline use reaches it and is flagged as the coupon's second use.
        back = HqService(config)
        runners[0] = Runner(back.run)
        wait_until(drained(a), 30, "store A's offline use at HQ")
        with Session(back.engine) as s:
            alert = s.scalars(select(Alert).where(Alert.kind == "coupon_used_twice")).one()
            assert alert.store_id == "S001" and "offline" in alert.detail
    finally:
        for r in runners:
            r.stop()
        for r in runners:
            assert r.error is None
        a.close()
        b.close()
        hq.engine.dispose()
        if runners[0] is not hq_runner:
            back.engine.dispose()
