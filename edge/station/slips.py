"""Service results mapped to the printer's receipt layouts (plain values in, receipts out)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from drivers.printer import Receipt, receipts
from edge.app import AppContext
from edge.services.gifts import RedemptionResult
from edge.services.members import MemberView
from edge.station.api import DailyReport

# What a gift voucher is good for: collect the gift at the desk within this time.
VOUCHER_VALID_DAYS = 30

HISTORY_WORDS = {
    "purchase": "购物",
    "checkin": "签到",
    "birthday": "生日礼",
    "referral": "推荐奖励",
    "redemption": "兑换",
    "expiry": "过期",
    "adjustment": "调整",
}


def header(app: AppContext) -> receipts.ReceiptHeader:
    now = app.clock().astimezone(app.tz)
    return receipts.ReceiptHeader(
        store_name=f"门店 {app.store_id}",
        store_id=app.store_id,
        device_id=app.device_id,
        printed_at=now.strftime("%Y-%m-%d %H:%M"),
    )


def _local(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


def gift_voucher(
    app: AppContext, result: RedemptionResult, phone_masked: str, width: int
) -> list[Receipt]:
    """A gift's voucher, or for a coupon redemption one coupon slip per coupon."""
    until = (_local(result.at, app.tz) + timedelta(days=VOUCHER_VALID_DAYS)).isoformat()
    if result.kind == "coupon":
        coupon_until = (
            _local(result.coupon_expires_at, app.tz).isoformat()
            if result.coupon_expires_at
            else until
        )
        return [
            receipts.coupon(
                receipts.Coupon(
                    header=header(app),
                    title=result.name,
                    value_cents=result.coupon_value_cents,
                    coupon_code=code,
                    valid_until=coupon_until,
                    terms=(f"卡号 {result.card_no[-4:]}", "每张限用一次 One use only"),
                ),
                width,
            )
            for code in result.coupon_codes
        ]
    voucher = receipts.GiftVoucher(
        header=header(app),
        gift_name=result.name if result.qty == 1 else f"{result.name} x{result.qty}",
        points_spent=result.points,
        balance_after=result.balance,
        card_number=_masked_card(result.card_no),
        phone=phone_masked,
        redemption_code=result.voucher_code,
        valid_until=until,
    )
    return [receipts.gift_voucher(voucher, width)]


def _masked_card(card_no: str) -> str:
    """Paper that members take away and throw away shows only the card's last four digits
    (the kiosk asks for them to verify a phone number); the new-card and replacement slips
    carry the whole number because they stand in for the card."""
    return "*" * max(0, len(card_no) - 4) + card_no[-4:]


def points_statement(app: AppContext, view: MemberView, width: int) -> Receipt:
    soonest = view.expiring[0] if view.expiring else None
    return receipts.points_statement(
        receipts.PointsStatement(
            header=header(app),
            member_name=view.name_masked or "会员",
            card_number=_masked_card(view.card_no or ""),
            phone=view.phone_masked,
            tier=view.tier_name_zh,
            balance=view.balance,
            expiring_points=soonest.points if soonest else 0,
            expiring_on=soonest.expires_on.isoformat() if soonest else "-",
            lines=tuple(
                receipts.LedgerLine(
                    _local(h.at, app.tz).strftime("%m-%d"),
                    HISTORY_WORDS.get(h.kind, h.kind),
                    h.points,
                )
                for h in view.history
            ),
        ),
        width,
    )


def new_card_slip(
    app: AppContext, view: MemberView, welcome_points: int, width: int, dispensed: bool = True
) -> Receipt:
    return receipts.new_card_slip(
        receipts.NewCardSlip(
            header=header(app),
            member_name=view.name_masked or "会员",
            card_number=view.card_no or "",
            phone=view.phone_masked,
            tier=view.tier_name_zh,
            welcome_points=welcome_points,
            card_dispensed=dispensed,
        ),
        width,
    )


def replacement_slip(
    app: AppContext,
    view: MemberView,
    old_card: str,
    new_card: str,
    balance: int,
    staff_id: str,
    width: int,
    dispensed: bool = True,
) -> Receipt:
    return receipts.card_replacement_slip(
        receipts.CardReplacementSlip(
            header=header(app),
            member_name=view.name_masked or "会员",
            old_card_number=old_card,
            new_card_number=new_card,
            phone=view.phone_masked,
            balance_carried=balance,
            staff_id=staff_id,
            card_dispensed=dispensed,
        ),
        width,
    )


def daily_report(app: AppContext, report: DailyReport, staff_id: str, width: int) -> Receipt:
    return receipts.staff_daily_report(
        receipts.StaffDailyReport(
            header=header(app),
            business_date=report.business_date.isoformat(),
            staff_id=staff_id,
            registrations=report.registrations,
            lookups=report.lookups,
            redemptions=report.redemptions,
            points_redeemed=report.points_redeemed,
            cards_replaced=report.cards_replaced,
            low_stock=report.low_stock,
        ),
        width,
    )
