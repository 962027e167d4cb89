"""A gift voucher printed at one store and handed over at another, checked with HQ through a
real broker, kiosk agents and HQ: collected once in the chain, refused on a second scan at
either store, and a forged code refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import Refusal
from edge.security.codes import sign_voucher
from edge.services.connectivity import connectivity
from edge.services.corrections import adjust_points
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.staff import StaffIdentity
from edge.services.vouchers import collect_voucher
from edge.storage.models import AuditRecord, OutboxEvent, VoucherCollection
from edge.sync.agent import Agent
from hq.models import Alert, DeviceKey
from hq.models import VoucherCollection as HqCollection
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config, row_counts

CLERK = StaffIdentity("c1", "clerk")


def online(app: AppContext):
    def check() -> bool:
        with app.db.read() as s:
            return not connectivity(s, app, app.clock()).offline

    return check


def hq_has_key(engine: Engine, device_id: str) -> Callable[[], bool]:
    """A check for wait_until: HQ holds a signing key of ``device_id``."""

    def check() -> bool:
        with Session(engine) as s:
            found = s.scalars(select(DeviceKey).where(DeviceKey.device_id == device_id)).first()
            return found is not None

    return check


def counts(app: AppContext) -> tuple[int | None, ...]:
    return row_counts(app, VoucherCollection, AuditRecord, OutboxEvent)


def test_a_voucher_of_store_a_is_collected_once_at_store_b_checked_with_hq(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    try:
        member = register_member(a, "13800138000", consent=True)
        adjust_points(a, member.card_no, 300, "goodwill", "welcome", CLERK)
        adjust_points(a, member.card_no, 300, "goodwill", "welcome", CLERK)
        add_gift(a, "TOWEL", "毛巾", 300, 5)
        voucher = redeem_gift(a, member.card_no, "TOWEL", request_id="q-1").voucher_code
        wait_until(drained(a), 20, "the redemption at HQ")
        register_member(b, "13900139000", consent=True)  # B's own business, acknowledged
        wait_until(drained(b), 20, "store B's registration at HQ")
        assert online(b)()

        at_b = collect_voucher(b, voucher, CLERK)
        assert at_b.verified and not at_b.offline and at_b.issuer_device_id == "K001"
        assert (at_b.sku, at_b.name, at_b.qty) == ("TOWEL", "毛巾", 1)
        assert at_b.card_no.endswith(member.card_no[-4:]) and "*" in at_b.card_no
        assert at_b.valid_until is not None

        before = counts(b)
        with pytest.raises(Refusal) as again:
            collect_voucher(b, voucher, CLERK)
        assert again.value.code == "voucher_collected"
        assert counts(b) == before

        wait_until(online(a), 20, "store A hearing from HQ")
        before = counts(a)
        with pytest.raises(Refusal) as home:  # the issuing store asks HQ too
            collect_voucher(a, voucher, CLERK)
        assert home.value.code == "voucher_collected" and "S002" in home.value.message
        assert home.value.details["store_id"] == "S002"
        assert counts(a) == before

        key = Ed25519PrivateKey.generate()  # not K001's
        forged = sign_voucher(key, "gift", "01JD0FORGEDREDEMPTION00000", "K001")
        wait_until(hq_has_key(hq.engine, "K001"), 20, "K001's signing key at HQ (its telemetry)")
        before_b = counts(b)
        with pytest.raises(Refusal) as at_hq:  # B cannot check K001's key; HQ can
            collect_voucher(b, forged, CLERK)
        assert at_hq.value.code == "voucher_forged"
        with pytest.raises(Refusal) as refused:
            collect_voucher(a, forged, CLERK)
        assert refused.value.code == "voucher_forged"
        assert counts(a) == before

        # A forgery of a real voucher not collected yet: HQ claims nothing for it (the
        # member's own voucher is handed over below).
        redeemed = redeem_gift(a, member.card_no, "TOWEL", request_id="q-2")
        wait_until(drained(a), 20, "the second redemption at HQ")
        copied = sign_voucher(key, "gift", redeemed.redemption_id, "K001")
        with pytest.raises(Refusal) as copy:
            collect_voucher(b, copied, CLERK)
        assert copy.value.code == "voucher_forged"
        assert counts(b) == before_b
        with Session(hq.engine) as s:
            assert s.get(HqCollection, ("K001", redeemed.redemption_id)) is None

        # B's event is the collection HQ granted it: no second collection flagged
        wait_until(drained(b), 20, "the collection at HQ")
        with Session(hq.engine) as s:
            first = s.get(HqCollection, ("K001", at_b.voucher_id))
            assert first is not None and first.device_id == "K002" and first.event_id
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(Alert)
                    .where(Alert.kind == "voucher_collected_twice")
                )
                == 0
            )
        with b.db.read() as s:
            [event] = [
                json.loads(p)
                for p in s.scalars(
                    select(OutboxEvent.payload).where(OutboxEvent.kind == "gift.collected")
                )
            ]
        assert event["data"]["verified"] is True and event["data"]["sku"] == "TOWEL"

        # HQ stops answering (its service is down, the broker and the agents are up): the
        # next voucher of A is taken at B on B's own record once the check times out
        second = redeem_gift(a, member.card_no, "TOWEL", request_id="q-2").voucher_code
        runners[0].stop()
        assert online(b)()  # B heard from HQ within offline_after_s: it asks, and waits
        taken = collect_voucher(b, second, CLERK)
        assert not taken.verified and taken.offline and (taken.sku, taken.name) == ("", "")
        with pytest.raises(Refusal) as again:
            collect_voucher(b, second, CLERK)
        assert again.value.code == "voucher_collected"
    finally:
        for r in runners:
            r.stop()
        for r in runners:
            assert r.error is None
        a.close()
        b.close()
        hq.engine.dispose()
