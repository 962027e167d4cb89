"""HQ's versioned gift catalogue and rules (hq.catalogue), on SQLite and PostgreSQL: every
change a new version numbered by HQ, with who, when, why and the difference, and its audit
row; an edit on an older version refused; bad input refused in one line with nothing
stored; which kiosks applied which version; each store's stock from its kiosks' events."""

from __future__ import annotations

import hashlib
import io
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.ids import IdFactory
from edge.protocol import Catalogue, Rules, Telemetry
from hq.audit import Actor, entries
from hq.catalogue import (
    CATALOGUE,
    RULES,
    CatalogueDesk,
    applied_versions,
    checked_picture,
)
from hq.fleet import apply_telemetry
from hq.models import AuditRecord, DocumentVersion, GiftPicture
from hq.stock import store_stock
from tests.hq.test_campaigns import event, ingest
from tests.waiting import wait_for

ids = IdFactory()
LI = Actor("ops-li", "web")
WANG = Actor("ops-wang", "cli")
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


class RecordingPublisher:
    """Stands in for the broker where a test is about versions, not delivery: keeps what
    would have been published, or fails like an unreachable broker while ``down``."""

    def __init__(self) -> None:
        self.catalogues: list[tuple[Catalogue, set[str]]] = []
        self.rules_sent: list[Rules] = []
        self.down = False

    def catalogue(self, catalogue: Catalogue, pictures: dict[str, bytes]) -> None:
        if self.down:
            raise ConnectionError("broker 127.0.0.1:1 unreachable")
        self.catalogues.append((catalogue, set(pictures)))

    def rules(self, rules: Rules) -> None:
        if self.down:
            raise ConnectionError("broker 127.0.0.1:1 unreachable")
        self.rules_sent.append(rules)


def jpeg(colour: str, size: tuple[int, int] = (320, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=80)
    return out.getvalue()


RULES_DOC: dict[str, Any] = {
    "points": {
        "points_per_yuan": 1,
        "expiry_months": 24,
        "pending_days": 0,
        "checkin_points": 5,
        "birthday_bonus_points": 100,
        "referral_bonus_points": 0,
    },
    "offline": {
        "offline_after_s": 60,
        "max_points_per_redemption": 5000,
        "max_points_per_member": 10_000,
        "max_points_per_device": 100_000,
        "max_offline_hours": 72,
    },
    "tiers": [
        {"code": "normal", "name_zh": "普通", "name_en": "Member", "threshold": 0},
        {"code": "gold", "name_zh": "金卡", "name_en": "Gold", "threshold": 500_000},
    ],
}


def counts(engine) -> tuple[int, int, int]:
    """Versions, pictures and audit rows HQ holds."""
    with Session(engine) as s:
        return tuple(  # type: ignore[return-value]
            int(s.scalar(select(func.count()).select_from(model)) or 0)
            for model in (DocumentVersion, GiftPicture, AuditRecord)
        )


def test_each_change_is_a_version_with_who_when_why_and_what_changed(engine):
    publisher = RecordingPublisher()
    desk = CatalogueDesk(engine, publisher, clock=lambda: NOW)
    towel = checked_picture(jpeg("teal"))
    first = desk.replace_catalogue(
        LI,
        {"gifts": [
            {"sku": "TOWEL", "name": "纯棉毛巾", "points_price": 300},
            {"sku": "RICE5", "name": "东北大米5kg", "points_price": 1200},
        ]},
        pictures={"TOWEL": towel},
        note="spring catalogue",
    )  # fmt: skip
    assert (first.version, first.published) == (1, True)
    second = desk.set_gift(WANG, "TOWEL", {"points_price": 350, "per_member_limit": 2}, based_on=1)
    third = desk.set_gift(
        WANG, "KETTLE", {"name": "电热水壶", "points_price": 6000}, picture=towel, based_on=2
    )
    fourth = desk.retire_gift(LI, "RICE5", based_on=3, note="sold out for the season")
    assert [r.version for r in (second, third, fourth)] == [2, 3, 4]
    assert all(r.published for r in (second, third, fourth))

    history = desk.history(CATALOGUE)
    assert [(r.version, r.actor, r.source, r.note) for r in history] == [
        (4, "ops-li", "web", "sold out for the season"),
        (3, "ops-wang", "cli", ""),
        (2, "ops-wang", "cli", ""),
        (1, "ops-li", "web", "spring catalogue"),
    ]
    assert all(r.at == NOW and r.published_at == NOW for r in history)
    newest = desk.catalogue().catalogue
    assert [(g.sku, g.points_price, g.per_member_limit, g.active) for g in newest.gifts] == [
        ("TOWEL", 350, 2, True),
        ("RICE5", 1200, None, False),
        ("KETTLE", 6000, None, True),
    ]
    # One picture, named by two gifts in three versions, kept once and sent once.
    assert newest.gifts[0].picture == newest.gifts[2].picture
    assert newest.gifts[0].picture is not None
    assert newest.gifts[0].picture.sha256 == hashlib.sha256(towel.data).hexdigest()
    assert counts(engine)[1] == 1
    assert desk.picture(towel.sha256) == towel.data
    assert [sent for _, sent in publisher.catalogues] == [{towel.sha256}, set(), set(), set()]
    assert [c.version for c, _ in publisher.catalogues] == [1, 2, 3, 4]

    # The audit log has a row per version, with the fields that changed.
    rows, total = entries(Session(engine), text="catalogue")
    assert total == 4
    assert rows[2].action == "catalogue.version" and rows[2].subject == "catalogue v2"
    assert rows[2].changes() == [
        ("TOWEL.per_member_limit", None, 2),
        ("TOWEL.points_price", 300, 350),
    ]
    assert rows[0].after == {"RICE5.active": False, "note": "sold out for the season"}


def test_the_difference_between_versions_as_data_and_text(engine):
    desk = CatalogueDesk(engine, RecordingPublisher(), clock=lambda: NOW)
    desk.replace_catalogue(LI, {"gifts": [
        {"sku": "TOWEL", "name": "纯棉毛巾", "points_price": 300},
        {"sku": "RICE5", "name": "东北大米5kg", "points_price": 1200},
    ]})  # fmt: skip
    desk.replace_catalogue(LI, {"gifts": [
        {"sku": "TOWEL", "name": "纯棉毛巾", "points_price": 350, "kind": "gift", "low_stock": 5},
        {"sku": "C10", "name": "10元券", "points_price": 900, "kind": "coupon",
         "coupon_value_cents": 1000, "per_member_limit": 1},
    ]})  # fmt: skip
    diff = desk.catalogue_diff()
    assert [g.sku for g in diff.added] == ["C10"] and [g.sku for g in diff.removed] == ["RICE5"]
    assert [(c.field, c.old, c.new) for c in diff.changed[0].changes] == [
        ("points_price", 300, 350),
        ("low_stock", 0, 5),
    ]
    assert diff.lines() == [
        "catalogue v1 -> v2",
        "  + C10 10元券: 900 points, coupon, at most 1 a member",
        "  - RICE5 东北大米5kg (no longer listed)",
        "  ~ TOWEL 纯棉毛巾",
        "      points_price: 300 -> 350",
        "      low_stock: 0 -> 5",
    ]
    assert desk.catalogue_diff(2, 1).lines()[0] == "catalogue v2 -> v1"
    assert desk.catalogue_diff(new=1).lines()[1] == "  + TOWEL 纯棉毛巾: 300 points, gift"

    desk.replace_rules(LI, RULES_DOC)
    desk.set_rules(
        WANG,
        {
            "points.points_per_yuan": 2,
            "tiers.gold.threshold": 300_000,
            "member_days": [{"weekday": 2, "multiplier_pct": 200}],
        },
        based_on=1,
    )
    assert desk.rules_diff().lines() == [
        "rules v1 -> v2",
        "  points.points_per_yuan: 1 -> 2",
        "  member_days.weekday 2.multiplier_pct: (none) -> 200",
        "  tiers.gold.threshold: 500000 -> 300000",
        "  member_days: the device's own -> (none)",
    ]
    assert desk.rules().rules.points.points_per_yuan == 2
    with pytest.raises(InvalidInput, match="the rules have no tier 'platinum'"):
        desk.set_rules(LI, {"tiers.platinum.threshold": 900_000})
    with pytest.raises(InvalidInput, match="points is not a section any more"):
        desk.set_rules(LI, {"points": 3, "points.checkin_points": 10})
    assert [r.version for r in desk.history(RULES)] == [2, 1]


def test_an_edit_made_on_an_older_version_is_refused_and_changes_nothing(engine):
    desk = CatalogueDesk(engine, RecordingPublisher())
    desk.replace_catalogue(LI, {"gifts": [{"sku": "TOWEL", "name": "毛巾", "points_price": 300}]})
    desk.set_gift(LI, "TOWEL", {"points_price": 320}, based_on=1)
    before = counts(engine)
    with pytest.raises(Refusal) as refused:
        desk.set_gift(WANG, "TOWEL", {"points_price": 280}, based_on=1)
    assert refused.value.code == "changed_meanwhile"
    assert "\n" not in refused.value.message and "reload" in refused.value.message
    assert counts(engine) == before
    assert desk.catalogue().catalogue.gifts[0].points_price == 320
    # The same change made on the newest version goes through.
    assert desk.set_gift(WANG, "TOWEL", {"points_price": 280}, based_on=2).version == 3


def test_two_people_publishing_at_once_cannot_both_make_the_same_version(postgres_url):
    """PostgreSQL: the first editor holds the catalogue's counter row until it commits; the
    second, made on the same version, waits for it and is refused."""
    from tests.hq.database import migrated_engine

    engine = migrated_engine(postgres_url)
    try:
        CatalogueDesk(engine, RecordingPublisher()).replace_catalogue(
            LI, {"gifts": [{"sku": "TOWEL", "name": "毛巾", "points_price": 300}]}
        )
        release, holding = threading.Event(), threading.Event()

        def waiting_clock() -> datetime:
            holding.set()
            release.wait(60)  # inside the first edit's transaction, the row taken
            return datetime.now(UTC)

        first_desk = CatalogueDesk(engine, RecordingPublisher(), clock=waiting_clock)
        second_desk = CatalogueDesk(engine, RecordingPublisher())
        results: dict[str, object] = {}

        def edit(name: str, desk: CatalogueDesk, price: int) -> None:
            try:
                results[name] = desk.set_gift(LI, "TOWEL", {"points_price": price}, based_on=1)
            except Refusal as exc:
                results[name] = exc

        first = threading.Thread(target=edit, args=("first", first_desk, 310))
        first.start()

        def waiting_for_a_lock() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                    )
                )

        # The second starts once the first holds the row (else it might take it first).
        wait_for(holding.is_set, 60, "the first editor to take the catalogue's row")
        second = threading.Thread(target=edit, args=("second", second_desk, 290))
        second.start()
        wait_for(waiting_for_a_lock, 60, "the second editor to wait for the first")
        release.set()
        first.join(30)
        second.join(30)
        assert getattr(results["first"], "version", None) == 2
        refused = results["second"]
        assert isinstance(refused, Refusal) and refused.code == "changed_meanwhile"
        history = CatalogueDesk(engine).history(CATALOGUE)
        assert [r.version for r in history] == [2, 1]
        assert CatalogueDesk(engine).catalogue().catalogue.gifts[0].points_price == 310

        # Without a version to be based on, the second edit waits and applies on the first.
        release.clear()
        holding.clear()
        first = threading.Thread(target=lambda: first_desk.set_gift(LI, "TOWEL", {"low_stock": 5}))
        first.start()
        wait_for(holding.is_set, 60, "the first editor to take the catalogue's row")
        second = threading.Thread(
            target=lambda: second_desk.set_gift(WANG, "MUG", {"name": "杯", "points_price": 90})
        )
        second.start()
        wait_for(waiting_for_a_lock, 60, "the second editor to wait for the first")
        release.set()
        first.join(60)
        second.join(60)
        newest = CatalogueDesk(engine).catalogue()
        assert newest.row.version == 4
        assert [(g.sku, g.low_stock) for g in newest.catalogue.gifts] == [
            ("TOWEL", 5),
            ("MUG", 0),
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d.set_gift(LI, "TOWEL", {"points_price": 0}), "gift TOWEL: points_price:"),
        (lambda d: d.set_gift(LI, "TOWEL", {"colour": "red"}), "a gift has no field 'colour'"),
        (lambda d: d.set_gift(LI, "NEW1", {"points_price": 10}), "gift NEW1 is new: give its name"),
        (lambda d: d.set_gift(LI, "TO WEL", {"points_price": 10}), "is not a valid SKU"),
        (lambda d: d.set_gift(LI, "TOWEL", {"points_price": "10"}), "Input should be a valid"),
        (lambda d: d.retire_gift(LI, "KETTLE"), "the catalogue has no gift KETTLE"),
        (
            lambda d: d.set_gift(LI, "TOWEL", {"active": True}),
            "nothing changed: this is the catalogue of version 1",
        ),
        (
            lambda d: d.replace_catalogue(
                LI,
                {
                    "gifts": [
                        {"sku": "A", "name": "a", "points_price": 1},
                        {"sku": "A", "name": "b", "points_price": 2},
                    ]
                },
            ),
            "gift A is listed twice",
        ),
        (
            lambda d: d.replace_catalogue(
                LI, {"version": 1, "gifts": [{"sku": "A", "name": "a", "points_price": 1}]}
            ),
            "version 1 is not new: HQ's catalogue is at version 1",
        ),
        (
            lambda d: d.replace_catalogue(
                LI,
                {
                    "gifts": [
                        {
                            "sku": "A",
                            "name": "a",
                            "points_price": 1,
                            "picture": {"sha256": "ab" * 32, "size": 10},
                        }
                    ]
                },
            ),
            "gift A names picture abababababab, which HQ does not hold",
        ),
        (
            lambda d: d.replace_catalogue(LI, {"gifts": [{"sku": "A", "name": "a"}]}),
            "Catalogue: gifts.0.points_price: Field required",
        ),
        (
            lambda d: d.replace_catalogue(LI, {"gifts": []}, note="x" * 300),
            "a note is at most 256 characters",
        ),
        (lambda d: d.set_rules(LI, {"points.per_yuan": 2}), "no rules field 'points.per_yuan'"),
        (lambda d: d.set_rules(LI, {"points.points_per_yuan": 2}), "HQ has no rules yet"),
        (
            lambda d: d.replace_rules(LI, RULES_DOC | {"tiers": [RULES_DOC["tiers"][1]]}),
            "the first tier must have threshold 0",
        ),
        (lambda d: d.replace_rules(LI, {"points": {}}), "Rules: points.points_per_yuan"),
    ],
)
def test_bad_input_is_one_line_and_stores_and_publishes_nothing(engine, edit, said):
    publisher = RecordingPublisher()
    desk = CatalogueDesk(engine, publisher)
    desk.replace_catalogue(LI, {"gifts": [{"sku": "TOWEL", "name": "毛巾", "points_price": 300}]})
    before, published = counts(engine), len(publisher.catalogues)
    with pytest.raises((InvalidInput, NotFound, Refusal)) as refused:
        edit(desk)
    assert said in refused.value.message
    assert "\n" not in refused.value.message
    assert counts(engine) == before
    assert len(publisher.catalogues) == published and publisher.rules_sent == []


def test_a_picture_that_is_not_one_is_refused_before_anything(engine):
    with pytest.raises(InvalidInput) as refused:
        checked_picture(b"<html>a page</html>", "TOWEL's picture towel.png")
    assert refused.value.message == (
        "TOWEL's picture towel.png: the file is not a PNG or JPEG picture"
    )


def test_a_version_the_broker_did_not_take_is_kept_and_sent_later(engine):
    publisher = RecordingPublisher()
    desk = CatalogueDesk(engine, publisher)
    desk.replace_catalogue(LI, {"gifts": [{"sku": "TOWEL", "name": "毛巾", "points_price": 300}]})
    publisher.down = True
    kettle = checked_picture(jpeg("red"))
    outage = [
        desk.set_gift(LI, "KETTLE", {"name": "壶", "points_price": 900}, picture=kettle),
        desk.set_gift(LI, "TOWEL", {"points_price": 310}),
    ]
    assert [(r.version, r.published) for r in outage] == [(2, False), (3, False)]
    assert outage[0].problem == "broker 127.0.0.1:1 unreachable"
    assert [r.published_at is None for r in desk.history(CATALOGUE)] == [True, True, False]
    assert desk.publish_pending()[0].published is False  # still down
    publisher.down = False
    done = desk.publish_pending()
    assert [(p.kind, p.version, p.pictures, p.published) for p in done] == [
        ("catalogue", 3, 1, True)  # the newest, with the picture the last one sent lacked
    ]
    assert publisher.catalogues[-1][0].version == 3
    assert publisher.catalogues[-1][1] == {kettle.sha256}
    assert desk.publish_pending() == []  # nothing waits now
    # Sent again on request, with every picture; the audit log says who asked.
    again = desk.publish(CATALOGUE, WANG, all_pictures=True)
    assert (again.version, again.pictures) == (3, 1)
    rows, _ = entries(Session(engine), text="catalogue.publish")
    assert [(r.actor, r.subject) for r in rows] == [("ops-wang", "catalogue v3")]


def test_the_first_version_numbers_on_from_what_the_kiosks_have(engine):
    """Kiosks ignore a version not newer than theirs: HQ's first version starts above the
    highest one they report (pushed before HQ kept versions)."""
    with Session(engine) as s, s.begin():
        apply_telemetry(s, telemetry("K001", "S001", catalogue=6, rules=3), NOW)
    desk = CatalogueDesk(engine, RecordingPublisher())
    first = desk.replace_catalogue(LI, {"gifts": []})
    assert first.version == 7
    assert desk.replace_rules(LI, RULES_DOC).version == 4
    # A document may number itself higher, never lower.
    assert desk.replace_rules(LI, RULES_DOC | {"version": 9, "effective_from": None,
        "member_days": []}).version == 9  # fmt: skip


def telemetry(device: str, store: str, catalogue: int, rules: int) -> Telemetry:
    return Telemetry(
        device_id=device,
        store_id=store,
        at=NOW,
        version="1.0",
        uptime_s=1.0,
        outbox_depth=0,
        rules_version=rules,
        catalogue_version=catalogue,
    )


def test_which_stores_applied_which_version(engine):
    desk = CatalogueDesk(engine, RecordingPublisher())
    for n in range(3):
        desk.replace_catalogue(
            LI, {"gifts": [{"sku": "TOWEL", "name": "毛巾", "points_price": 300 + n}]}
        )
    desk.replace_rules(LI, RULES_DOC)
    with Session(engine) as s, s.begin():
        for device, store, catalogue, rules in [
            ("K001", "S001", 3, 1),
            ("K002", "S001", 2, 1),
            ("K003", "S002", 3, 1),
            ("K004", "S003", 0, 0),  # never had HQ's catalogue (or too old to say)
        ]:
            apply_telemetry(s, telemetry(device, store, catalogue, rules), NOW)
    with Session(engine) as s:
        applied = applied_versions(s)
    assert (applied.newest_catalogue, applied.newest_rules) == (3, 1)
    assert [(c.version, c.stores, c.devices) for c in applied.catalogue] == [
        (3, 2, 2),
        (2, 1, 1),
        (0, 1, 1),
    ]
    assert [(c.version, c.stores, c.devices) for c in applied.rules] == [(1, 2, 3), (0, 1, 1)]
    assert [d.device_id for d in applied.behind(CATALOGUE)] == ["K002", "K004"]
    assert [d.device_id for d in applied.behind(RULES)] == ["K004"]
    assert [(d.store_id, d.device_id, d.catalogue_version) for d in applied.devices][:2] == [
        ("S001", "K001", 3),
        ("S001", "K002", 2),
    ]


def test_each_stores_stock_as_its_kiosks_events_tell_it(engine):
    member = ids.new()
    at = NOW

    def gift_event(what: str, device: str, store: str, seq: int, **data: object):
        return event(what, device, store, seq, data, at=at + timedelta(minutes=seq))

    ingest(
        engine,
        "K001",
        gift_event("gift.changed", "K001", "S001", 1, sku="TOWEL", name="毛巾", kind="gift",
                   points_price=300, stock=10),
        gift_event("gift.redeemed", "K001", "S001", 2, member_id=member, sku="TOWEL", qty=2,
                   entries=[]),
        gift_event("gift.redeemed", "K001", "S001", 3, member_id=member, sku="MUG", qty=1,
                   entries=[]),  # a gift HQ has no figure for: unknown until it has one
    )  # fmt: skip
    ingest(
        engine,
        "K002",
        gift_event("gift.stock", "K002", "S001", 1, sku="TOWEL", stock=5, delta=5),
        gift_event("gift.redeemed", "K002", "S001", 2, member_id=member, sku="TOWEL", qty=1,
                   entries=[]),
        gift_event("alert.low_stock", "K002", "S001", 3, sku="TOWEL", name="毛巾", stock=3,
                   threshold=3),
    )  # fmt: skip
    ingest(
        engine,
        "K003",
        gift_event("gift.stock", "K003", "S002", 1, sku="TOWEL", stock=40, delta=40),
    )
    with Session(engine) as s:
        rows = store_stock(s)
        s001 = store_stock(s, store_id="S001")
    assert [(r.store_id, r.sku, r.stock) for r in rows] == [
        ("S001", "TOWEL", 11),
        ("S002", "TOWEL", 40),
    ]
    assert [(k.device_id, k.stock) for k in s001[0].kiosks] == [("K001", 8), ("K002", 3)]
    assert s001[0].at == at + timedelta(minutes=3)
    # A restock later sets the figure again, whatever was redeemed before it.
    ingest(engine, "K001", gift_event("gift.stock", "K001", "S001", 4, sku="TOWEL", stock=20,
                                      delta=12))  # fmt: skip
    with Session(engine) as s:
        assert store_stock(s, sku="TOWEL")[0].stock == 23
