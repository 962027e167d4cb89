"""Every receipt layout with sample values, on both paper widths: for previews and tests.

``python -m drivers.printer.gallery DIR`` writes ``<layout>-<58|80>mm.png`` into DIR.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from drivers.printer import receipts as r
from drivers.printer.document import Receipt
from drivers.printer.preview import render_preview
from drivers.printer.profiles import PROFILES

HEADER = r.ReceiptHeader("华联超市 人民路店", "S001", "K001", "2026-11-23 10:15")
PHONE = "13812345678"

SAMPLES: dict[str, Callable[[int], Receipt]] = {
    "points-statement": lambda w: r.points_statement(
        r.PointsStatement(
            HEADER,
            "王小明",
            "2000000000015",
            PHONE,
            "金卡",
            5230,
            300,
            "2026-12-31",
            (
                r.LedgerLine("11-02", "购物", 128),
                r.LedgerLine("11-09", "签到", 5),
                r.LedgerLine("11-15", "兑换保温杯", -800),
                r.LedgerLine("11-20", "会员日双倍", 256),
            ),
        ),
        w,
    ),
    "gift-voucher": lambda w: r.gift_voucher(
        r.GiftVoucher(
            HEADER,
            "不锈钢保温杯",
            800,
            4430,
            "2000000000015",
            PHONE,
            "GV1.S001.K001.000042.9Qk3sT0b",
            "2026-12-31",
        ),
        w,
    ),
    "coupon": lambda w: r.coupon(
        r.Coupon(
            HEADER,
            "生鲜满减券",
            1000,
            "CP-S001-000917",
            "2026-12-15",
            ("限本店使用，不找零。", "每单限用一张。"),
            min_spend_cents=5000,
        ),
        w,
    ),
    "new-card": lambda w: r.new_card_slip(
        r.NewCardSlip(HEADER, "王小明", "2000000000015", PHONE, "普通卡", 100), w
    ),
    "card-replacement": lambda w: r.card_replacement_slip(
        r.CardReplacementSlip(
            HEADER, "王小明", "2000000000015", "2000000000022", PHONE, 5230, "E0007"
        ),
        w,
    ),
    "staff-daily-report": lambda w: r.staff_daily_report(
        r.StaffDailyReport(
            HEADER, "2026-11-23", "E0007", 12, 85, 9, 7200, 1, (("不锈钢保温杯", 3), ("环保袋", 5))
        ),
        w,
    ),
    "test-page": lambda w: r.technician_test_page(
        r.TechnicianTestPage(HEADER, "sim:-", 80 if w > 32 else 58, "gb18030", ("paper: ok",)), w
    ),
}


def write_gallery(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in SAMPLES.items():
        for mm in (58, 80):
            profile = PROFILES[f"generic-{mm}"]
            path = folder / f"{name}-{mm}mm.png"
            render_preview(build(profile.columns), profile).save(path, optimize=True)
            written.append(path)
    return written


if __name__ == "__main__":
    for written in write_gallery(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/receipts")):
        print(written)
