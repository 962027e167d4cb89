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
from edge.services.gifts import coupon_status, use_coupon
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
    """Validates a printed coupon for a lane, and spends it when the lane asks to."""
    try:
        if check.use:
            used = use_coupon(
                app, check.code, check.ref or check.transaction, actor=f"lane:{check.lane_id}"
            )
            return CouponCheckResult(
                transaction=check.transaction,
                ok=True,
                coupon_id=used.coupon_id,
                sku=used.sku,
                value_cents=used.value_cents,
            )
        status = coupon_status(app, check.code)
    except KioskError as exc:
        return CouponCheckResult(transaction=check.transaction, ok=False, error=exc.code)
    return CouponCheckResult(
        transaction=check.transaction,
        ok=not status.error,
        coupon_id=status.coupon_id,
        sku=status.sku,
        value_cents=status.value_cents,
        error=status.error,
    )
