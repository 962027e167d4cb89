"""The member's coupons on the touchscreen, from a real HQ through the store's broker and the
kiosk's own sync agent: shown in both languages, one printed, its code read back from the
printed slip and taken at a till, then refused to a second print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from drivers.scanner import CodeDecoder
from edge.domain.coupons import Audience, CouponKind, Terms
from edge.domain.ids import IdFactory
from edge.services.coupons import take_coupon
from edge.sync.agent import Agent
from hq.audit import Actor
from hq.coupons import CampaignSpec, create_campaign, issue_campaign
from hq.service import HqService
from tests.sync.conftest import Runner, broker, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config

OPS = Actor("ops")  # who acts at HQ in these tests

__all__ = ["broker"]  # the fixture: a real Mosquitto with the project's TLS and ACL


def test_a_member_sees_their_coupons_and_prints_one_a_till_then_takes(
    broker, tmp_path, make_kiosk
) -> None:
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    data = make_data_dir(tmp_path, broker, "K001", "S001", 1)
    kiosk = make_kiosk(data)
    agent_app = open_app(data)
    runners = [Runner(hq.run), Runner(Agent(agent_app).run)]
    now = datetime.now(UTC)
    until = now + timedelta(days=30)
    try:
        wait_until(drained(agent_app), 30, "the store's members at HQ")
        with Session(hq.engine) as s, s.begin():
            for terms in (
                Terms("SPRING", "春季满减券", CouponKind.THRESHOLD_OFF, 1000, 10_000, 0, "",
                      now - timedelta(hours=1), until),
                Terms("RICE", "会员赠米", CouponKind.GIFT, 0, 0, 0, "RICE5",
                      now - timedelta(hours=1), until),
            ):  # fmt: skip
                create_campaign(s, CampaignSpec(terms, Audience.ALL), OPS, now)
        for campaign in ("SPRING", "RICE"):
            assert issue_campaign(hq.engine, campaign, now, IdFactory()).issued == 3

        kiosk.scan(kiosk.people.wang_card)
        kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member's points")
        kiosk.tap("coupons")
        vm = kiosk.app.coupons_vm
        kiosk.wait_for(lambda: vm.state == "shown" and len(vm.coupons) == 2, what="the wallet")
        kiosk.wait_for(lambda: "满¥100减¥10" in kiosk.texts(), what="the coupons' rows")
        assert "礼品：" in kiosk.texts()  # the gift coupon names the gift of the catalogue
        kiosk.tap("language")
        kiosk.wait_for(lambda: "¥10 off when you spend ¥100" in kiosk.texts(), what="English")
        kiosk.tap("language")

        spring = next(c for c in vm.coupons if c.title == "春季满减券")
        kiosk.tap(f"print-coupon-{spring.coupon_id}")
        kiosk.wait_for(lambda: "printed" in vm.notice and not vm.busy, what="the coupon printed")
        assert kiosk.center.simulator is not None
        assert kiosk.center.simulator.receipts()[-1] == "coupon"
        slip = sorted((data / "receipts").glob("*-coupon.png"))[-1]
        (code,) = [c.text for c in CodeDecoder().decode(np.asarray(Image.open(slip).convert("L")))]

        # A till of the store takes the code read from the paper, once in the chain.
        taken = take_coupon(agent_app, code, "R-2026-0001")
        assert (taken.campaign_id, taken.value_cents, taken.threshold_cents) == (
            "SPRING",
            1000,
            10_000,
        )
        # The list still shows it: the next print asks HQ again and is refused, and the list
        # then shows what is left.
        kiosk.tap(f"print-coupon-{spring.coupon_id}")
        kiosk.wait_for(
            lambda: not vm.busy and [c.title for c in vm.coupons] == ["会员赠米"],
            what="the used coupon gone",
        )
        assert "这张优惠券已使用或已结束" in kiosk.notice()
        assert kiosk.center.simulator.receipts().count("coupon") == 1

        # Nothing of the wallet stays for the next customer.
        kiosk.tap("coupons-done")
        kiosk.wait_for(lambda: kiosk.app.current == "attract", what="the attract screen")
        assert vm.coupons == []
    finally:
        for r in runners:
            r.stop()
        agent_app.close()
        hq.engine.dispose()
