"""Every slip the member center prints, with sample values, on both paper widths.

``python -m edge.station.slip_gallery DIR`` writes ``<layout>-<58|80>mm.png`` into DIR: the
previews in docs/receipts, the technician's test page among them. The samples are what the
services hand the layouts (names, phones and cards masked as the kiosk masks them).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.printer.gallery import Sample, sample_test_page, write_gallery
from drivers.printer.receipts import ReceiptHeader
from edge.domain.day_report import DayFigures
from edge.domain.member_view import HistoryLine, MemberView
from edge.domain.points import ExpiringPoints
from edge.security.personal import mask_card, mask_phone
from edge.services.gifts import RedemptionResult
from edge.station import slips
from edge.station.api import CouponTile

TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 23, 2, 15, tzinfo=UTC)  # 10:15 in the store
HEADER = ReceiptHeader("华联超市 人民路店", "S001", "K001", "2026-11-23 10:15", slips.CENTER_NAME)
CARD, NEW_CARD = "2900000000018", "2900000000025"


def _line(day: int, kind: str, points: int) -> HistoryLine:
    at = datetime(2026, 11, day, 3, 0, tzinfo=UTC)
    return HistoryLine(at, kind, points, f"sample-{day}", at.astimezone(TZ).date())


def sample_member(
    card_no: str = CARD, tier_zh: str = "金卡会员", balance: int = 5230
) -> MemberView:
    """王先生 as the services show him, with a month of history."""
    lapse = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # midnight starting 1 January
    return MemberView(
        member_id="01JD0SAMPLE0000000000000000",
        card_no=card_no,
        card_state="active",
        card_masked=mask_card(card_no),
        phone_masked=mask_phone("13812345678"),
        name_masked="王先生",
        tier="gold",
        tier_name_zh=tier_zh,
        tier_name_en="Gold",
        balance=balance,
        available=balance,
        pending=0,
        expiring=(ExpiringPoints(300, lapse, date(2026, 12, 31)),),
        next_tier="diamond",
        next_tier_name_zh="钻石会员",
        next_tier_name_en="Diamond",
        next_tier_missing=1_200_000,
        tier_basis="spend",
        birthday_month=False,
        checked_in_today=False,
        birthday_bonus_claimed=False,
        overdraft_flagged=False,
        registered_at=datetime(2025, 12, 20, 2, 0, tzinfo=UTC),
        deleted=False,
        history=(
            _line(20, "purchase", 256),
            _line(15, "redemption", -800),
            _line(9, "checkin", 5),
            _line(2, "purchase", 128),
        ),
    )


def sample_redemption() -> RedemptionResult:
    return RedemptionResult(
        redemption_id="01JD0SAMPLE0000000000000042",
        card_no=CARD,
        sku="CUP",
        name="不锈钢保温杯",
        kind="gift",
        qty=1,
        points=800,
        balance=4430,
        voucher_code="GV1.S001.K001.000042.9Qk3sT0b",
        coupon_codes=[],
        coupon_value_cents=0,
        coupon_expires_at=None,
        offline=False,
        low_stock=False,
        at=AT,
    )


SAMPLES: dict[str, Sample] = {
    "points-statement": lambda w: slips.points_statement(HEADER, sample_member(), w),
    "gift-voucher": lambda w: slips.gift_voucher(
        HEADER, sample_redemption(), sample_member(), TZ, w
    )[0],
    "coupon": lambda w: slips.coupon(
        HEADER,
        "生鲜满减券",
        slips.money(1000),
        "CP-S001-000917",
        "2026-12-15",
        ("限本店使用，不找零。", "每单限用一张。"),
        w,
        min_spend_cents=5000,
    ),
    "campaign-coupon": lambda w: slips.wallet_coupon(
        HEADER,
        CouponTile(
            "SPRING26.01JQ8ZK3M4N5P6Q7R8S9T0VWXY",
            "春季满100减10",
            "threshold_off",
            1000,
            10_000,
            0,
            "",
            date(2027, 3, 31),
            True,
        ),
        "V1AIBEQUI7KNIFESKOI4XDAMKKLBMVUQKCINCEKRSHJBFEWTKOKBIVEU2UKY24MBFAKLOL7O7B5UX5ROWA75HSWL"
        "MIUX4F4USAX2YKVWFYGVX7BIB6FD6K5LC7B4ZVCGXVUVYBCCM3LFIYQKBTPC74TRQZ6IDWY5QJ",
        "8800000000018",
        w,
    ),
    "new-card": lambda w: slips.new_card_slip(
        HEADER, sample_member(tier_zh="普通会员", balance=0), 0, w
    ),
    "card-replacement": lambda w: slips.replacement_slip(
        HEADER, sample_member(NEW_CARD), CARD, 5230, "E0007", w
    ),
    "staff-daily-report": lambda w: slips.daily_report(
        HEADER,
        DayFigures(date(2026, 11, 23), 12, 85, 9, 7200, 1, (("不锈钢保温杯", 3), ("环保袋", 5))),
        "E0007",
        w,
    ),
    "test-page": sample_test_page(HEADER),
}


if __name__ == "__main__":
    for written in write_gallery(
        Path(sys.argv[1] if len(sys.argv) > 1 else "docs/receipts"), SAMPLES
    ):
        print(written)
