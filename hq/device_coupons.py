"""Coupons a kiosk printed for points, answered about at any store of the chain.

A kiosk signs the coupons it prints with its own key; no other kiosk holds that key. HQ
keeps each device's public key as the device's telemetry tells it (on the device's own
topic, under its certificate), and each coupon from the ``gift.redeemed`` event that printed
it. Another store's kiosk asks HQ with the coupon's code: HQ checks the signature with the
printing device's key, then whether the coupon is known, unexpired and unused, and for a
use records it in the same transaction as it answers, so a coupon is used once in the chain.
A use HQ hears of only from a ``coupon.used`` event (a kiosk that could not ask) is recorded
then, and a second one raises ``coupon_used_twice``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, KioskError, NotFound, Refusal
from edge.protocol import CouponAnswer, CouponAsk, Event
from edge.protocol.messages import CouponUsedData, GiftRedeemedData
from edge.security.codes import (
    VoucherClaims,
    verify_voucher,
    voucher_device_id,
    voucher_key_from_text,
)
from hq.bulk import insert_new, insert_rows
from hq.models import CampaignCoupon, DeviceCoupon, DeviceKey


@dataclass(frozen=True)
class UseAlert:
    """What a ``coupon.used`` event says HQ must be told about."""

    kind: str
    subject: str
    detail: str


def mark_used(
    session: Session,
    model: type[CampaignCoupon] | type[DeviceCoupon],
    where: list[ColumnElement[bool]],
    *,
    at: datetime,
    store_id: str,
    device_id: str,
    ref: str,
    offline: bool,
) -> bool:
    """Records the coupon ``where`` selects used, unless it was used before; whether this
    is its first use. One statement, so of two workers at the same moment one gets it."""
    statement = (
        update(model)
        .where(*where, model.used_at.is_(None))
        .values(
            used_at=at,
            used_store_id=store_id,
            used_device_id=device_id,
            used_ref=ref,
            used_offline=offline,
        )
        .returning(model.used_at)
    )
    return session.execute(statement).first() is not None


def record_key(session: Session, device_id: str, key_text: str, now: datetime) -> None:
    """Keeps a device's voucher-signing key the first time HQ hears of it."""
    insert_new(
        session.connection(),
        DeviceKey,
        {"device_id": device_id, "public_key": key_text, "first_seen_at": now},
        ["device_id", "public_key"],
    )


def record_coupons(session: Session, event: Event, data: GiftRedeemedData) -> None:
    """Keeps the coupons of a ``gift.redeemed`` event (the same event again changes
    nothing); a redemption of a gift, or an event from before coupons were told, has none."""
    if not data.coupon_ids or data.coupon_expires_at is None:
        return
    known = set(
        session.scalars(
            select(DeviceCoupon.coupon_id).where(
                DeviceCoupon.issuer_device_id == event.device_id,
                DeviceCoupon.coupon_id.in_(data.coupon_ids),
            )
        )
    )
    insert_rows(
        session.connection(),
        DeviceCoupon,
        [
            {
                "issuer_device_id": event.device_id,
                "coupon_id": coupon_id,
                "member_id": data.member_id,
                "sku": data.sku,
                "value_cents": data.coupon_value_cents,
                "expires_at": data.coupon_expires_at,
                "used_at": None,
                "used_store_id": None,
                "used_device_id": None,
                "used_ref": None,
                "used_offline": False,
            }
            for coupon_id in dict.fromkeys(data.coupon_ids)
            if coupon_id not in known
        ],
    )


def verified(session: Session, code: str) -> VoucherClaims:
    """What ``code`` (a voucher or coupon a kiosk printed) says, its signature checked with
    one of the keys the device it names told HQ.

    Raises:
        Refusal: ``code_malformed``, ``code_bad_signature``, or ``unknown_device_key`` when
            HQ has no key of that device yet.
    """
    device_id = voucher_device_id(code)
    keys = session.scalars(select(DeviceKey.public_key).where(DeviceKey.device_id == device_id))
    checked = False
    for key_text in keys:
        checked = True
        try:
            return verify_voucher(voucher_key_from_text(key_text), code)
        except (Refusal, InvalidInput):
            continue
    if checked:
        raise Refusal("this code is not genuine", code="code_bad_signature")
    raise Refusal(
        f"HQ has not heard from kiosk {device_id} yet and cannot check what it printed",
        code="unknown_device_key",
    )


def _verified(session: Session, code: str) -> tuple[str, str]:
    """The printing device and coupon id of ``code``, checked (:func:`verified`).

    Raises:
        Refusal: as :func:`verified`, and ``not_a_coupon`` for a gift voucher.
    """
    claims = verified(session, code)
    if claims.kind != "coupon":
        raise Refusal("this is a gift voucher, not a coupon", code="not_a_coupon")
    return claims.device_id, claims.voucher_id


def used_refusal(coupon: CampaignCoupon | DeviceCoupon) -> Refusal:
    """Why a coupon used before is refused: where and when it was used."""
    where = coupon.used_store_id or "another store"
    when = coupon.used_at.isoformat() if coupon.used_at else "before"
    return Refusal(f"this coupon was used at {where} at {when}", code="coupon_used")


def answer(session: Session, ask: CouponAsk, device_id: str, now: datetime) -> CouponAnswer:
    """HQ's answer about a coupon a kiosk printed (``ask.code``): whether it can be used
    and, for ``use``, recorded used at the asking kiosk now."""
    base: dict[str, Any] = {"action": ask.action, "coupon_id": ask.coupon_id}
    coupon: DeviceCoupon | None = None
    try:
        issuer, coupon_id = _verified(session, ask.code)
        if coupon_id != ask.coupon_id:
            raise InvalidInput("the code is not of the coupon asked about", code="bad_request")
        coupon = session.get(DeviceCoupon, (issuer, coupon_id))
        if coupon is None:
            raise NotFound(
                f"HQ has no record of this coupon from {issuer} yet", code="unknown_coupon"
            )
        if coupon.used_at is not None:
            raise used_refusal(coupon)
        if coupon.expires_at <= now:
            raise Refusal("this coupon has expired", code="coupon_expired")
        key = [DeviceCoupon.issuer_device_id == issuer, DeviceCoupon.coupon_id == coupon_id]
        if ask.action == "use" and not mark_used(
            session, DeviceCoupon, key,
            at=now, store_id=ask.store_id, device_id=device_id, ref=ask.ref, offline=False,
        ):  # fmt: skip
            # another store used it a moment ago
            session.refresh(coupon)
            raise used_refusal(coupon)
    except KioskError as exc:
        used = coupon is not None and exc.code == "coupon_used"
        return CouponAnswer(
            **base,
            ok=False,
            error=exc.code,
            message=exc.message[:256],
            used_store_id=coupon.used_store_id if used and coupon else None,
            used_at=coupon.used_at if used and coupon else None,
            at=now,
        )
    return CouponAnswer(
        **base,
        ok=True,
        issuer_device_id=coupon.issuer_device_id,
        value_cents=coupon.value_cents,
        sku=coupon.sku,
        expires_at=coupon.expires_at,
        at=now,
    )


def used_again(
    session: Session,
    coupon: CampaignCoupon | DeviceCoupon,
    key: list[ColumnElement[bool]],
    event: Event,
    data: CouponUsedData,
) -> bool:
    """Records the use a ``coupon.used`` event tells unless the coupon was used before;
    whether this is a second use (not the event of the use HQ granted this device)."""
    first = mark_used(
        session, type(coupon), key,
        at=event.at, store_id=event.store_id, device_id=event.device_id, ref=data.ref,
        offline=data.offline,
    )  # fmt: skip
    if first:
        return False
    session.refresh(coupon)
    return (coupon.used_device_id, coupon.used_ref) != (event.device_id, data.ref)


def record_use(session: Session, event: Event, data: CouponUsedData) -> UseAlert | None:
    """A ``coupon.used`` event of a coupon a kiosk printed: the use HQ granted (nothing to
    do), a use HQ hears of first here (recorded now), or a second use: then the alert to
    raise (kind, subject, detail). A coupon HQ has no record of (printed before coupons were
    told) is left alone."""
    issuer = data.issuer or event.device_id  # a kiosk's own coupon names no issuer
    coupon = session.get(DeviceCoupon, (issuer, data.coupon_id))
    if coupon is None:
        return None
    key = [DeviceCoupon.issuer_device_id == issuer, DeviceCoupon.coupon_id == data.coupon_id]
    if not used_again(session, coupon, key, event, data):
        return None
    return UseAlert(
        "coupon_used_twice",
        f"{issuer}:{data.coupon_id}",
        f"coupon {data.coupon_id} of {issuer} used at {coupon.used_store_id} "
        f"({coupon.used_device_id}) and again at {event.store_id} ({event.device_id})",
    )
