"""Gift vouchers at HQ: each one a kiosk printed is recorded from its ``gift.redeemed``
event, and a kiosk of another store asks about one before handing its gift over
(``voucher/request``): HQ answers what it knows and, when asked to, records the collection
for that kiosk at once. The collection's primary key (issuing device, voucher id) is the
rule: of two stores claiming the same voucher at the same moment, one row is inserted and
the other store is told where it was collected.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from edge.domain.errors import Refusal
from edge.protocol import Event, VoucherCheck, VoucherCheckResult
from edge.protocol.messages import GiftRedeemedData
from edge.security.personal import mask_card
from hq.bulk import insert_new
from hq.device_coupons import verified
from hq.models import GiftVoucher, VoucherCollection

VOUCHER_KEY = ["issuer_device_id", "voucher_id"]  # a voucher's identity, in both tables
CLAIMED = ""  # the event id of a collection HQ granted before the kiosk's event came


def record_voucher(session: Session, event: Event, data: GiftRedeemedData) -> None:
    """Keeps the gift voucher of a ``gift.redeemed`` event (a coupon redemption has none);
    the same event again changes nothing."""
    if data.coupons or not data.redemption_id or not data.sku or data.qty < 1:
        return
    insert_new(
        session.connection(),
        GiftVoucher,
        {
            "issuer_device_id": event.device_id,
            "voucher_id": data.redemption_id,
            "store_id": event.store_id,
            "member_id": data.member_id,
            "card_no": data.card_no or "",
            "sku": data.sku,
            "name": data.name,
            "qty": data.qty,
            "valid_until": data.valid_until,
            "event_id": event.event_id,
            "at": event.at,
        },
        VOUCHER_KEY,
    )


def genuine(session: Session, request: VoucherCheck) -> bool:
    """Whether the code asked about is a gift voucher the device it names signed, for the
    voucher asked about. A device HQ has no key of yet is taken at its word (as before HQ
    kept keys): what it printed is checked once its telemetry has told HQ its key."""
    try:
        claims = verified(session, request.code)
    except Refusal as refusal:
        return refusal.code == "unknown_device_key"
    return (claims.kind, claims.device_id, claims.voucher_id) == (
        "gift",
        request.issuer_device_id,
        request.voucher_id,
    )


def collect_first(
    session: Session,
    issuer_device_id: str,
    voucher_id: str,
    store_id: str,
    device_id: str,
    event_id: str,
    at: datetime,
) -> bool:
    """Records the voucher collected at ``device_id`` unless it was collected before;
    whether this is its first collection (the collection's primary key decides a race)."""
    return insert_new(
        session.connection(),
        VoucherCollection,
        {
            "issuer_device_id": issuer_device_id,
            "voucher_id": voucher_id,
            "store_id": store_id,
            "device_id": device_id,
            "event_id": event_id,
            "at": at,
        },
        VOUCHER_KEY,
    )


def check_voucher(
    session: Session, request: VoucherCheck, store_id: str, now: datetime
) -> VoucherCheckResult:
    """What HQ knows of ``request``'s voucher; with ``claim``, the voucher not collected
    before and not past ``today`` is recorded collected at the asking kiosk now."""
    key = (request.issuer_device_id, request.voucher_id)
    ids = {"issuer_device_id": request.issuer_device_id, "voucher_id": request.voucher_id}
    if request.code and not genuine(session, request):
        return VoucherCheckResult(**ids, state="forged", at=now)
    voucher = session.get(GiftVoucher, key)
    if voucher is None:
        return VoucherCheckResult(**ids, state="unknown", at=now)
    gift = {
        "sku": voucher.sku,
        "name": voucher.name,
        "qty": voucher.qty,
        "card_masked": mask_card(voucher.card_no) if voucher.card_no else "",
        "valid_until": voucher.valid_until,
    }
    lapsed = (
        request.today is not None
        and voucher.valid_until is not None
        and voucher.valid_until < request.today
    )
    if request.claim and not lapsed:
        taken = collect_first(
            session,
            request.issuer_device_id,
            request.voucher_id,
            store_id,
            request.device_id,
            CLAIMED,
            now,
        )
        if taken:
            return VoucherCheckResult(**ids, state="claimed", **gift, at=now)
    first = session.get(VoucherCollection, key, populate_existing=True)
    if first is None:
        return VoucherCheckResult(**ids, state="known", **gift, at=now)
    return VoucherCheckResult(
        **ids,
        state="collected",
        **gift,
        collected_store_id=first.store_id,
        collected_device_id=first.device_id,
        collected_at=first.at,
        at=now,
    )
