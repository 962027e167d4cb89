"""What the agent answers a lane with: its purchases, refunds and coupons, through the
services.

The services do the work (an accrual is idempotent by its receipt id, a coupon is spent
once); this module turns the lane's message into their call and their outcome or refusal
into the lane's answer. HQ's pushes are applied by :mod:`edge.services.pushes`, other stores'
entries by :mod:`edge.services.replica`.
"""

from __future__ import annotations

from edge.app import AppContext
from edge.domain.errors import KioskError
from edge.protocol import (
    CouponCheck,
    CouponCheckResult,
    LanePurchase,
    LanePurchaseResult,
    LaneRefund,
    LaneRefundResult,
)
from edge.services.corrections import refund_purchase
from edge.services.coupons import take_coupon
from edge.services.points import accrue_purchase


def accrue_lane_purchase(app: AppContext, purchase: LanePurchase) -> LanePurchaseResult:
    """A lane's purchase becomes an accrual; a resent receipt returns the first result."""
    try:
        accrual = accrue_purchase(
            app,
            purchase.card_no,
            purchase.amount_cents,
            purchase.receipt_id,
            actor=f"lane:{purchase.lane_id}",
        )
    except KioskError as exc:
        return LanePurchaseResult(receipt_id=purchase.receipt_id, ok=False, error=exc.code)
    return LanePurchaseResult(
        receipt_id=purchase.receipt_id,
        ok=True,
        points=accrual.points,
        balance=accrual.balance,
        duplicate=accrual.duplicate,
    )


def refund_lane_purchase(app: AppContext, refund: LaneRefund) -> LaneRefundResult:
    """A lane's refund takes back the receipt's points; a resent refund returns the first
    result, a refusal says why in a code and a sentence the till can show."""
    try:
        done = refund_purchase(
            app, refund.receipt_id, refund.refund_id, refund.amount_cents, f"lane:{refund.lane_id}"
        )
    except KioskError as exc:
        return LaneRefundResult(
            refund_id=refund.refund_id, ok=False, error=exc.code, message=exc.message[:256]
        )
    return LaneRefundResult(
        refund_id=refund.refund_id,
        ok=True,
        points=done.points,
        balance=done.balance,
        overdraft=done.overdraft,
        duplicate=done.duplicate,
    )


def check_coupon(app: AppContext, check: CouponCheck) -> CouponCheckResult:
    """Validates a coupon for a lane, and spends it when the lane asks to: one this kiosk
    printed, or one of HQ's campaigns (asked of HQ, see :mod:`edge.services.coupons`)."""
    try:
        taken = take_coupon(
            app, check.code, check.ref or check.transaction, f"lane:{check.lane_id}", check.use
        )
    except KioskError as exc:
        return CouponCheckResult(
            transaction=check.transaction, ok=False, error=exc.code, message=exc.message[:256]
        )
    return CouponCheckResult(
        transaction=check.transaction,
        ok=True,
        coupon_id=taken.coupon_id,
        sku=taken.sku,
        value_cents=taken.value_cents,
        campaign_id=taken.campaign_id,
        kind=taken.kind if taken.campaign_id else "",
        threshold_cents=taken.threshold_cents,
        percent=taken.percent,
        offline=taken.offline,
    )
