"""A coupon a kiosk printed for points, at the tills of the whole chain, through a real
broker, HQ and two stores' agents and lanes: another store takes it once HQ has checked the
printing kiosk's signature, its own store then refuses it, a forged one is refused, another
kiosk's coupon waits for HQ, and a use the printing kiosk made alone is flagged at HQ."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import KioskError
from edge.security.codes import sign_voucher, unverified_voucher_claims
from edge.services import gifts
from edge.services.coupons import take_coupon
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import AuditRecord, HqCouponUse, OutboxEvent
from edge.sync.agent import Agent
from hq.ledger import balances, ledger_sums
from hq.models import Alert, DeviceCoupon, DeviceKey
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config, row_counts
from tests.sync.test_campaign_coupons import lane_for


def counts(app: AppContext) -> tuple[int | None, ...]:
    return row_counts(app, HqCouponUse, AuditRecord, OutboxEvent)


def hq_knows(engine, model, **where) -> bool:
    with Session(engine) as s:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return bool(s.scalar(query))


def test_a_kiosk_coupon_is_good_once_at_any_store_of_the_chain(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    hq_runner = Runner(hq.run)
    runners = [hq_runner, Runner(Agent(a).run), Runner(Agent(b).run)]
    lane_a, lane_b = lane_for(broker, "S001", "L1"), lane_for(broker, "S002", "L2")
    back: HqService | None = None
    try:
        with lane_a, lane_b:
            member = register_member(a, "13800138000", consent=True)
            accrue_purchase(a, member.card_no, 500_000, "R-1")
            gifts.add_gift(a, "CPN5", "5元代金券", 100, 10, kind="coupon", coupon_value_cents=500)
            redeemed = gifts.redeem_gift(a, member.card_no, "CPN5", 3, "req-1")
            one, two, three = redeemed.coupon_codes
            wait_until(drained(a), 20, "the redemption at HQ")
            wait_until(lambda: hq_knows(hq.engine, DeviceKey, device_id="K001"), 20, "A's key")
            assert hq_knows(hq.engine, DeviceCoupon, issuer_device_id="K001", value_cents=500)

            # Store B takes A's coupon once HQ checked it; A's own tills then refuse it.
            small, off = lane_b.take_coupon(one, 300)
            assert (small.ok, small.value_cents, off) == (True, 500, 300), small
            again = lane_b.check_coupon(one)
            assert (again.ok, again.error) == (False, "coupon_used")
            at_home = lane_a.check_coupon(one)
            assert (at_home.ok, at_home.error) == (False, "coupon_used"), at_home
            assert "S002" in at_home.message

            # A takes its own second coupon (HQ records it); B then refuses it.
            assert lane_a.check_coupon(two).ok
            refused = lane_b.check_coupon(two)
            assert (refused.ok, refused.error) == (False, "coupon_used")
            assert "S001" in refused.message

            # A forged coupon in A's name: HQ checks A's key and refuses it; nothing changes.
            before = counts(b)
            coupon_id = unverified_voucher_claims(three).voucher_id
            forged = sign_voucher(Ed25519PrivateKey.generate(), "coupon", coupon_id, "K001")
            bad = lane_b.check_coupon(forged)
            assert (bad.ok, bad.error) == (False, "code_bad_signature"), bad
            assert counts(b) == before

            # HQ goes away: B cannot check A's coupon and says so; A decides its own alone.
            hq_runner.stop()
            before = counts(b)
            with pytest.raises(KioskError) as waiting:
                take_coupon(b, three, "B-9")
            assert waiting.value.code == "coupon_foreign_offline"
            assert "HQ cannot be asked" in waiting.value.message
            assert counts(b) == before
            alone = take_coupon(a, three, "A-9")
            assert alone.offline and alone.value_cents == 500

            # A second use HQ hears of later is flagged: B took the first coupon while HQ
            # answered, and A's own record never heard of it; offline, A goes by that record.
            assert take_coupon(a, one, "A-10").offline
            back = HqService(config)
            runners[0] = Runner(back.run)
            wait_until(drained(a), 30, "A's offline uses at HQ")
            with Session(back.engine) as s:
                alert = s.scalars(select(Alert).where(Alert.kind == "coupon_used_twice")).one()
                assert alert.store_id == "S001" and "S002" in alert.detail
                uses = s.scalars(
                    select(DeviceCoupon.used_store_id).order_by(DeviceCoupon.coupon_id)
                ).all()
                assert sorted(u or "" for u in uses) == ["S001", "S001", "S002"]
                sums = ledger_sums(s)  # HQ's reconciliation: each balance is its entries' sum
                assert all(sums.get(m, 0) == v for m, v in balances(s).items())
        for app in (a, b):
            assert verify_ledger(app).ok
    finally:
        for r in runners:
            r.stop()
        for r in runners:
            assert r.error is None
        a.close()
        b.close()
        hq.engine.dispose()
        if back is not None:
            back.engine.dispose()
