"""The member center's slips: vouchers, coupons, statements, card slips and the day's report.

Each layout lays a service result out in receipt steps (:mod:`drivers.printer.document`)
under the store's heading with the 会员中心 banner, and takes the paper's column count so that
one layout serves 58 and 80 mm rolls. Phone numbers are masked here whatever the caller passes:
paper leaves the store. Paper a member takes away and throws away shows only the card's last
four digits (the kiosk asks for them to verify a phone number); the new-card and replacement
slips carry the whole number because they stand in for the card.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from drivers.printer import Barcode, Qr, Receipt, Rule, Text
from drivers.printer.document import Step, columns
from drivers.printer.receipts import ReceiptHeader, closing, heading
from edge.app import AppContext
from edge.domain.corrections import Reason, history_key
from edge.domain.day_report import DayFigures
from edge.domain.gifts import DEFAULT_VOUCHER_VALID_DAYS, voucher_valid_until
from edge.domain.member_view import MemberView
from edge.domain.points import local_date
from edge.security.personal import mask_card, mask_phone
from edge.services.gifts import RedemptionResult
from edge.station.api import CouponTile

CENTER_NAME = "会员中心"
THANKS = "谢谢惠顾，欢迎再次光临！"

HISTORY_WORDS = {
    "purchase": "购物",
    "checkin": "签到",
    "birthday": "生日礼",
    "referral": "推荐奖励",
    "redemption": "兑换",
    "expiry": "过期",
    "adjustment": "调整",
    "refund": "退货",
    "merge_in": "合并会员",
    "merge_out": "已合并",
}
REASON_WORDS: dict[str, str] = {
    Reason.MISSED_POINTS: "漏积分补录",
    Reason.GOODWILL: "服务补偿",
    Reason.CORRECTION: "积分更正",
    Reason.OVERDRAFT_SETTLED: "欠分结清",
    Reason.OVERDRAFT_WRITTEN_OFF: "欠分核销",
}
WORDS: dict[str, str] = {**HISTORY_WORDS, **REASON_WORDS}


def history_word(kind: str, ref: str) -> str:
    """A history line's words on a slip: its kind, or an adjustment's reason."""
    return WORDS.get(history_key(kind, ref), kind)


def header(app: AppContext) -> ReceiptHeader:
    """This kiosk's heading, printed now (store-local time)."""
    now = app.clock().astimezone(app.tz)
    return ReceiptHeader(
        store_name=f"门店 {app.store_id}",
        store_id=app.store_id,
        device_id=app.device_id,
        printed_at=now.strftime("%Y-%m-%d %H:%M"),
        banner=CENTER_NAME,
    )


def money(cents: int) -> str:
    return f"¥{cents // 100}.{cents % 100:02d}"


def gift_voucher(
    head: ReceiptHeader, result: RedemptionResult, member: MemberView, tz: ZoneInfo, width: int
) -> list[Receipt]:
    """A gift's voucher (its signed code as a QR), or for a coupon redemption one coupon slip
    per coupon."""
    if result.kind == "coupon":
        coupon_until = (
            local_date(result.coupon_expires_at, tz).isoformat()
            if result.coupon_expires_at
            else _valid_until(result, tz).isoformat()
        )
        terms = (f"卡号 {result.card_no[-4:]}", "每张限用一次 One use only")
        gives = money(result.coupon_value_cents)
        return [
            coupon(head, result.name, gives, code, coupon_until, terms, width)
            for code in result.coupon_codes
        ]
    steps = heading(head, "礼品兑换券 Gift voucher", width)
    steps += [
        Text(
            result.name if result.qty == 1 else f"{result.name} x{result.qty}",
            "center",
            bold=True,
            big=True,
        ),
        Text(columns("卡号", mask_card(result.card_no), width)),
        Text(columns("手机", mask_phone(member.phone_masked), width)),
        Text(columns("消耗积分", str(result.points), width)),
        Text(columns("剩余积分", str(result.balance), width)),
        Qr(result.voucher_code),
        Text(f"有效期至 {_valid_until(result, tz).isoformat()}", "center"),
        Text("凭此券到服务台领取礼品", "center"),
    ]
    return [Receipt("gift-voucher", tuple(steps + closing(THANKS)))]


def _valid_until(result: RedemptionResult, tz: ZoneInfo) -> date:
    """The date a gift voucher is collected by: kept with its redemption (a reprint prints
    the same), or for a result that does not say, the 30 days vouchers always had."""
    if result.voucher_valid_until is not None:
        return result.voucher_valid_until
    return voucher_valid_until(result.at, tz, DEFAULT_VOUCHER_VALID_DAYS)


def coupon(
    head: ReceiptHeader,
    title: str,
    gives: str,
    code: str,
    valid_until: str,
    terms: tuple[str, ...],
    width: int,
    min_spend_cents: int | None = None,
) -> Receipt:
    """A coupon slip: what it ``gives`` in large type (an amount, a discount, a gift) and its
    signed code as a QR code (a signed code runs to some 160 characters, past what a Code 128
    on 58 or 80 mm paper can hold for a till's scanner); "满¥N可用" only with a minimum
    spend."""
    steps = heading(head, "优惠券 Coupon", width)
    steps += [
        Text(title, "center", bold=True),
        Text(gives, "center", big=True),
        *([Text(f"满{money(min_spend_cents)}可用", "center")] if min_spend_cents else []),
        Qr(code),
        Text(f"有效期至 {valid_until}", "center"),
        *[Text(term) for term in terms],
    ]
    return Receipt("coupon", tuple(steps + closing(THANKS)))


def coupon_gives(kind: str, value_cents: int, percent: int, gift_name: str) -> str:
    """What a coupon of HQ's campaigns gives, as the slip prints it: ¥10.00, 9折, 85折, or
    the gift's name."""
    if kind == "percent_off":
        pays = 100 - percent
        return f"{pays // 10}折" if pays % 10 == 0 else f"{pays}折"
    if kind == "gift":
        return gift_name
    return money(value_cents)


def wallet_coupon(
    head: ReceiptHeader,
    tile: CouponTile,
    code: str,
    card_no: str,
    width: int,
) -> Receipt:
    """A coupon of the member's wallet printed at the kiosk: good at any store of the chain,
    once (the lane asks HQ)."""
    return coupon(
        head,
        tile.title,
        coupon_gives(tile.kind, tile.value_cents, tile.percent, tile.gift_name),
        code,
        tile.valid_until.isoformat(),
        (f"卡号 {card_no[-4:]}", "全连锁门店可用，每张限用一次", "Any store of the chain, once"),
        width,
        min_spend_cents=tile.threshold_cents if tile.kind == "threshold_off" else None,
    )


def points_statement(head: ReceiptHeader, member: MemberView, width: int) -> Receipt:
    """Balance, the recent history and the points that expire soonest."""
    soonest = member.expiring[0] if member.expiring else None
    steps = heading(head, "积分对账单 Points statement", width)
    steps += [
        Text(columns("会员", member.name_masked or "会员", width)),
        Text(columns("卡号", member.card_masked, width)),
        Text(columns("手机", mask_phone(member.phone_masked), width)),
        Text(columns("等级", member.tier_name_zh, width)),
        Rule(),
    ]
    steps += [
        Text(columns(f"{h.on:%m-%d} {history_word(h.kind, h.ref)}", f"{h.points:+d}", width))
        for h in member.history
    ]
    expiring_on = soonest.expires_on.isoformat() if soonest else "-"
    steps += [
        Rule(),
        Text(columns("当前积分", str(member.balance), width), bold=True),
        Text(f"{soonest.points if soonest else 0} 积分将于 {expiring_on} 过期"),
    ]
    return Receipt("points-statement", tuple(steps + closing(THANKS)))


def _card_codes(card_no: str, dispensed: bool) -> list[Step]:
    """The card's barcode; when no card came out, the slip itself is the card until the
    member collects one at the service desk: a QR the kiosk's camera reads and the barcode
    the lanes' scanners read."""
    barcode = Barcode(card_no, "EAN13" if len(card_no) == 13 else "CODE128")
    if dispensed:
        return [barcode]
    return [
        Rule(),
        Text("卡机暂无可发的卡", "center", bold=True),
        Text("本凭条可当会员卡使用：", "center"),
        Text("自助机扫二维码，收银台扫条码", "center"),
        Qr(card_no, module_dots=8),
        barcode,
        Text("请凭本凭条到服务台领取实体卡", "center", bold=True),
        Text("No card came out: this slip is"),
        Text("your member card until you"),
        Text("collect one at the service desk."),
        Rule(),
    ]


def new_card_slip(
    head: ReceiptHeader, member: MemberView, welcome_points: int, width: int, dispensed: bool = True
) -> Receipt:
    """The new member's card number in full, as a barcode, or as the card itself when none
    came out of the dispenser."""
    card_no = member.card_no or ""
    title = "新会员卡 New member card" if dispensed else "会员卡凭条 Member card slip"
    steps = heading(head, title, width)
    steps += [
        Text(f"欢迎您，{member.name_masked or '会员'}！", "center", bold=True),
        Text(columns("卡号", card_no, width)),
        Text(columns("手机", mask_phone(member.phone_masked), width)),
        Text(columns("等级", member.tier_name_zh, width)),
        Text(columns("入会积分", str(welcome_points), width)),
        *_card_codes(card_no, dispensed),
        Text("请妥善保管您的会员卡", "center"),
    ]
    return Receipt("new-card", tuple(steps + closing(THANKS)))


def replacement_slip(
    head: ReceiptHeader,
    member: MemberView,
    old_card_no: str,
    balance: int,
    staff_id: str,
    width: int,
    dispensed: bool = True,
) -> Receipt:
    """The replaced card and ``member``'s new one (their ``card_no``), the points carried over
    and the staff member who did it."""
    new_card_no = member.card_no or ""
    steps = heading(head, "补卡凭条 Card replacement", width)
    steps += [
        Text(columns("会员", member.name_masked or "会员", width)),
        Text(columns("手机", mask_phone(member.phone_masked), width)),
        Text(columns("原卡（已挂失）", old_card_no, width)),
        Text(columns("新卡", new_card_no, width), bold=True),
        Text(columns("转入积分", str(balance), width)),
        Text(columns("经办员工", staff_id, width)),
        *_card_codes(new_card_no, dispensed),
        Text("原卡已停用，新卡即时生效。", "center"),
    ]
    return Receipt("card-replacement", tuple(steps + closing(THANKS)))


def daily_report(head: ReceiptHeader, day: DayFigures, staff_id: str, width: int) -> Receipt:
    steps = heading(head, "员工日报 Staff daily report", width)
    steps += [
        Text(columns("营业日", day.business_date.isoformat(), width)),
        Text(columns("员工", staff_id, width)),
        Rule(),
        Text(columns("新会员注册", str(day.registrations), width)),
        Text(columns("积分查询", str(day.lookups), width)),
        Text(columns("礼品兑换", str(day.redemptions), width)),
        Text(columns("兑换积分", str(day.points_redeemed), width)),
        Text(columns("补卡", str(day.cards_replaced), width)),
    ]
    if day.low_stock:
        steps += [Rule(), Text("库存不足 Low stock", bold=True)]
        steps += [Text(columns(name, str(left), width)) for name, left in day.low_stock]
    return Receipt("staff-daily-report", tuple(steps + closing("— 报表结束 —")))
