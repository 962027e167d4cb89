"""The member center's receipt layouts, built from plain values (no domain objects).

Every layout takes the paper's column count so that one layout serves 58 and 80 mm rolls.
Phone numbers are masked here, whatever the caller passes: paper leaves the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.printer.document import (
    Barcode,
    Cut,
    Feed,
    Qr,
    Receipt,
    Rule,
    Step,
    Text,
    columns,
)

CENTER_NAME = "会员中心"


MASKED_PHONE = re.compile(r"\d{3}\*{4}\d{4}|\*+\d{4}|\**")


def mask_phone(phone: str) -> str:
    """``13812345678`` -> ``138****5678``; short or odd numbers keep only the last four.

    A number masked already (``138****5678`` or ``*******5678``, as the services hand it
    over: they hold only masked numbers) is printed as it is, not masked a second time.
    """
    if MASKED_PHONE.fullmatch(phone):
        return phone
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) == 11:
        return f"{digits[:3]}****{digits[7:]}"
    return "*" * max(0, len(digits) - 4) + digits[-4:]


def money(cents: int) -> str:
    return f"¥{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class ReceiptHeader:
    """Who printed it and when; ``printed_at`` is already local time text."""

    store_name: str
    store_id: str
    device_id: str
    printed_at: str


@dataclass(frozen=True)
class LedgerLine:
    date: str
    description: str
    points: int


@dataclass(frozen=True)
class PointsStatement:
    header: ReceiptHeader
    member_name: str
    card_number: str
    phone: str
    tier: str
    balance: int
    expiring_points: int
    expiring_on: str
    lines: tuple[LedgerLine, ...] = ()


@dataclass(frozen=True)
class GiftVoucher:
    header: ReceiptHeader
    gift_name: str
    points_spent: int
    balance_after: int
    card_number: str
    phone: str
    redemption_code: str  # signed; printed as a QR code
    valid_until: str


@dataclass(frozen=True)
class Coupon:
    """A coupon slip; ``min_spend_cents`` prints "满¥N可用" only when the coupon has one."""

    header: ReceiptHeader
    title: str
    value_cents: int
    coupon_code: str
    valid_until: str
    terms: tuple[str, ...] = ()
    min_spend_cents: int | None = None


@dataclass(frozen=True)
class NewCardSlip:
    header: ReceiptHeader
    member_name: str
    card_number: str
    phone: str
    tier: str
    welcome_points: int
    card_dispensed: bool = True


@dataclass(frozen=True)
class CardReplacementSlip:
    header: ReceiptHeader
    member_name: str
    old_card_number: str
    new_card_number: str
    phone: str
    balance_carried: int
    staff_id: str
    card_dispensed: bool = True


@dataclass(frozen=True)
class StaffDailyReport:
    header: ReceiptHeader
    business_date: str
    staff_id: str
    registrations: int
    lookups: int
    redemptions: int
    points_redeemed: int
    cards_replaced: int
    low_stock: tuple[tuple[str, int], ...] = field(default=())


@dataclass(frozen=True)
class TechnicianTestPage:
    header: ReceiptHeader
    printer_name: str
    paper_mm: int
    encoding: str
    status_lines: tuple[str, ...]


def _head(h: ReceiptHeader, title: str, width: int) -> list[Step]:
    return [
        Text(h.store_name, "center", bold=True),
        Text(CENTER_NAME, "center", big=True),
        Text(title, "center", bold=True),
        Rule(),
        Text(columns("门店 Store", h.store_id, width)),
        Text(columns("设备 Device", h.device_id, width)),
        Text(columns("时间 Time", h.printed_at, width)),
        Rule(),
    ]


def _tail(note: str = "谢谢惠顾，欢迎再次光临！") -> list[Step]:
    return [Rule(), Text(note, "center"), Feed(2), Cut()]


def points_statement(r: PointsStatement, width: int) -> Receipt:
    steps = _head(r.header, "积分对账单 Points statement", width)
    steps += [
        Text(columns("会员", r.member_name, width)),
        Text(columns("卡号", r.card_number, width)),
        Text(columns("手机", mask_phone(r.phone), width)),
        Text(columns("等级", r.tier, width)),
        Rule(),
    ]
    steps += [
        Text(columns(f"{line.date} {line.description}", f"{line.points:+d}", width))
        for line in r.lines
    ]
    steps += [
        Rule(),
        Text(columns("当前积分", str(r.balance), width), bold=True),
        Text(f"{r.expiring_points} 积分将于 {r.expiring_on} 过期"),
    ]
    return Receipt("points-statement", tuple(steps + _tail()))


def gift_voucher(r: GiftVoucher, width: int) -> Receipt:
    steps = _head(r.header, "礼品兑换券 Gift voucher", width)
    steps += [
        Text(r.gift_name, "center", bold=True, big=True),
        Text(columns("卡号", r.card_number, width)),
        Text(columns("手机", mask_phone(r.phone), width)),
        Text(columns("消耗积分", str(r.points_spent), width)),
        Text(columns("剩余积分", str(r.balance_after), width)),
        Qr(r.redemption_code),
        Text(f"有效期至 {r.valid_until}", "center"),
        Text("凭此券到服务台领取礼品", "center"),
    ]
    return Receipt("gift-voucher", tuple(steps + _tail()))


def coupon(r: Coupon, width: int) -> Receipt:
    steps = _head(r.header, "优惠券 Coupon", width)
    steps += [
        Text(r.title, "center", bold=True),
        Text(money(r.value_cents), "center", big=True),
        *([Text(f"满{money(r.min_spend_cents)}可用", "center")] if r.min_spend_cents else []),
        Barcode(r.coupon_code, "CODE128"),
        Text(f"有效期至 {r.valid_until}", "center"),
        *[Text(term) for term in r.terms],
    ]
    return Receipt("coupon", tuple(steps + _tail()))


def _card_codes(card_number: str, dispensed: bool) -> list[Step]:
    """The card's barcode; when no card came out, the slip itself is the card until the
    member collects one at the service desk: a QR the kiosk's camera reads and the barcode
    the lanes' scanners read."""
    barcode = Barcode(card_number, "EAN13" if len(card_number) == 13 else "CODE128")
    if dispensed:
        return [barcode]
    return [
        Rule(),
        Text("卡机暂无可发的卡", "center", bold=True),
        Text("本凭条可当会员卡使用：", "center"),
        Text("自助机扫二维码，收银台扫条码", "center"),
        Qr(card_number, module_dots=8),
        barcode,
        Text("请凭本凭条到服务台领取实体卡", "center", bold=True),
        Text("No card came out: this slip is"),
        Text("your member card until you"),
        Text("collect one at the service desk."),
        Rule(),
    ]


def new_card_slip(r: NewCardSlip, width: int) -> Receipt:
    title = "新会员卡 New member card" if r.card_dispensed else "会员卡凭条 Member card slip"
    steps = _head(r.header, title, width)
    steps += [
        Text(f"欢迎您，{r.member_name}！", "center", bold=True),
        Text(columns("卡号", r.card_number, width)),
        Text(columns("手机", mask_phone(r.phone), width)),
        Text(columns("等级", r.tier, width)),
        Text(columns("入会积分", str(r.welcome_points), width)),
        *_card_codes(r.card_number, r.card_dispensed),
        Text("请妥善保管您的会员卡", "center"),
    ]
    return Receipt("new-card", tuple(steps + _tail()))


def card_replacement_slip(r: CardReplacementSlip, width: int) -> Receipt:
    steps = _head(r.header, "补卡凭条 Card replacement", width)
    steps += [
        Text(columns("会员", r.member_name, width)),
        Text(columns("手机", mask_phone(r.phone), width)),
        Text(columns("原卡（已挂失）", r.old_card_number, width)),
        Text(columns("新卡", r.new_card_number, width), bold=True),
        Text(columns("转入积分", str(r.balance_carried), width)),
        Text(columns("经办员工", r.staff_id, width)),
        *_card_codes(r.new_card_number, r.card_dispensed),
        Text("原卡已停用，新卡即时生效。", "center"),
    ]
    return Receipt("card-replacement", tuple(steps + _tail()))


def staff_daily_report(r: StaffDailyReport, width: int) -> Receipt:
    steps = _head(r.header, "员工日报 Staff daily report", width)
    steps += [
        Text(columns("营业日", r.business_date, width)),
        Text(columns("员工", r.staff_id, width)),
        Rule(),
        Text(columns("新会员注册", str(r.registrations), width)),
        Text(columns("积分查询", str(r.lookups), width)),
        Text(columns("礼品兑换", str(r.redemptions), width)),
        Text(columns("兑换积分", str(r.points_redeemed), width)),
        Text(columns("补卡", str(r.cards_replaced), width)),
    ]
    if r.low_stock:
        steps += [Rule(), Text("库存不足 Low stock", bold=True)]
        steps += [Text(columns(name, str(left), width)) for name, left in r.low_stock]
    return Receipt("staff-daily-report", tuple(steps + _tail("— 报表结束 —")))


def technician_test_page(r: TechnicianTestPage, width: int) -> Receipt:
    steps = _head(r.header, "打印机测试页 Printer test page", width)
    steps += [
        Text(columns("打印机", r.printer_name, width)),
        Text(columns("纸宽", f"{r.paper_mm} mm", width)),
        Text(columns("编码", r.encoding, width)),
        Text("中文：会员中心，积分￥¥：测试。", bold=True),
        Text("ASCII 0123456789 ABC xyz"),
        Qr(f"KIOSK-TEST:{r.header.store_id}:{r.header.device_id}"),
        Barcode("6901234567892", "EAN13"),
        Rule(),
        *[Text(line) for line in r.status_lines],
    ]
    return Receipt("test-page", tuple(steps + _tail("测试完成 Test complete")))
