"""A small believable member center for the simulator, the demo tour and the UI tests.

Everything goes through the use cases (registration, purchases, staff), so the ledger, the
audit chain and the outbox are exactly what real use would leave. Seeding is skipped when
the database already has gifts or staff: a store's real data is never touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta

from edge.app import AppContext
from edge.services import cards as card_service
from edge.services import gifts as gift_service
from edge.services import lookups
from edge.services import members as member_service
from edge.services import points as points_service
from edge.services import staff as staff_service


@dataclass(frozen=True)
class DemoPeople:
    """Who the seeded center knows: phone numbers, cards and staff credentials."""

    wang_phone: str
    wang_card: str
    wang_birthday: date
    li_phone: str
    li_card: str
    zhao_phone: str
    zhao_card_blocked: str
    clerk_id: str
    clerk_pin: str
    technician_id: str
    technician_pin: str


GIFTS = (
    # sku, name, points, stock, low-stock threshold, kind, coupon value in cents
    ("TOWEL", "纯棉毛巾", 300, 40, 5, "gift", 0),
    ("CPN10", "10元购物券", 500, 200, 20, "coupon", 1000),
    ("RICE5", "东北大米5kg", 1200, 12, 3, "gift", 0),
    ("OIL", "花生油1.8L", 1500, 0, 3, "gift", 0),
    ("PAN", "不粘炒锅", 4000, 6, 2, "gift", 0),
    ("KETTLE", "电热水壶", 6000, 4, 1, "gift", 0),
)

PEOPLE = DemoPeople(
    wang_phone="13800138000",
    wang_card="",
    wang_birthday=date(1956, 1, 1),
    li_phone="13912345678",
    li_card="",
    zhao_phone="13700001111",
    zhao_card_blocked="",
    clerk_id="1001",
    clerk_pin="2580",
    technician_id="9001",
    technician_pin="8024",
)


def seed_demo(app: AppContext) -> DemoPeople:
    """Seeds an empty member center; returns who is in it (the same on every run)."""
    today = app.clock().astimezone(app.tz).date()
    # 王先生's birthday is this month, so the birthday gift shows in the tour
    birthday = date(1956, today.month, min(today.day, 28))
    if gift_service.list_gifts(app, include_inactive=True) or staff_service.staff_count(app):
        return _known(app, birthday)
    for sku, name, price, stock, low, kind, value in GIFTS:
        gift_service.add_gift(
            app, sku, name, price, stock, low, None, kind, value, 30, actor="seed"
        )
    clerk = staff_service.add_staff(app, PEOPLE.clerk_id, "supervisor", PEOPLE.clerk_pin, "张")
    staff_service.add_staff(
        app, PEOPLE.technician_id, "technician", PEOPLE.technician_pin, "技", by=clerk
    )
    # Purchases eleven months ago: those points expire at the end of next month.
    past = dataclasses.replace(app, clock=lambda: app.clock() - timedelta(days=335))
    wang = member_service.register_member(
        past, PEOPLE.wang_phone, True, "王先生", birthday.isoformat()
    )
    li = member_service.register_member(past, PEOPLE.li_phone, True, "李女士", "1962-09-18")
    zhao = member_service.register_member(past, PEOPLE.zhao_phone, True, "赵女士")
    points_service.accrue_purchase(past, wang.card_no, 128_000, "R-2025-0001")
    points_service.accrue_purchase(past, li.card_no, 21_000, "R-2025-0002")
    recent = dataclasses.replace(app, clock=lambda: app.clock() - timedelta(days=20))
    points_service.accrue_purchase(recent, wang.card_no, 356_050, "R-2026-0107")
    points_service.accrue_purchase(recent, zhao.card_no, 50_000, "R-2026-0108")
    card_service.report_lost_card(app, zhao.card_no, clerk)
    return _known(app, birthday)


def _known(app: AppContext, birthday: date) -> DemoPeople:
    def card(phone: str, active: bool = True) -> str:
        view = member_service.show_member(app, phone=phone)
        return lookups.newest_card_no(app, view.member_id) or ""

    return dataclasses.replace(
        PEOPLE,
        wang_card=card(PEOPLE.wang_phone),
        wang_birthday=birthday,
        li_card=card(PEOPLE.li_phone),
        zhao_card_blocked=card(PEOPLE.zhao_phone, active=False),
    )
