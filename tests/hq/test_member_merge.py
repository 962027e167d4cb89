"""Merging two member records of one person at HQ, on SQLite and on PostgreSQL.

Two real kiosks (stores S001 and S002, sync off) make the members and their events; HQ
stores them. HQ merges; both kiosks then follow their store's feed, as the agent does, and
must agree with HQ: the old card identifies the kept member (or is refused as blocked), the
balance and lots moved, the history kept, ``kiosk ledger verify`` holds. Every refusal
changes nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.cli.member_commands import render_member
from edge.domain.errors import InvalidInput, KioskError, NotFound, Refusal
from edge.domain.ids import IdFactory
from edge.domain.merges import MERGE_IN, MERGE_OUT, OldCards
from edge.services.members import identify, register_member, show_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Card, LedgerEntry, Member, PointsLot
from hq.feeds import find_member, holders
from hq.ledger import add_to_balances, balances, ledger_sums
from hq.merges import merge_members
from hq.models import (
    Alert,
    CampaignCoupon,
    CentralCard,
    CentralEntry,
    CentralLot,
    CentralMember,
    FeedItem,
    MemberHolder,
    MemberMerge,
)
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import HQ_VAULT, sqlite_hq_url
from tests.hq.test_feeds import NOW, follow, kiosk, send
from tests.sync.helpers import outbox_ids

ids = IdFactory()


class Chain:
    """Kiosk A at S001 with member X (kept), kiosk B at S002 with member Y (absorbed): each
    with a purchase; Y also with an opening lot brought in at HQ and a campaign coupon."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.a = kiosk(root, "K001", "S001", 1)
        self.b = kiosk(root, "K002", "S002", 50_000)
        self.x = register_member(self.a, "13800138000", consent=True)
        self.y = register_member(self.b, "13900139000", consent=True)
        accrue_purchase(self.a, self.x.card_no, 12_000, "A-1")
        accrue_purchase(self.b, self.y.card_no, 34_000, "B-1")
        for app in (self.a, self.b):
            send(engine, app)
        with Session(engine) as s, s.begin():
            lot = ids.new()
            s.add(
                CentralLot(
                    id=lot,
                    member_id=self.y.member_id,
                    points=500,
                    expires_at=NOW + timedelta(days=200),
                    source="import-1",
                )
            )
            s.add(
                CentralEntry(
                    id=ids.new(), member_id=self.y.member_id, kind="opening", points=500,
                    lot_id=lot, ref="import-1", store_id="S002", device_id="hq-import",
                    at=NOW, event_id="import-1", available_at=NOW,
                    expires_at=NOW + timedelta(days=200),
                )
            )  # fmt: skip
            add_to_balances(s, {self.y.member_id: 500}, NOW)
            s.add(
                CampaignCoupon(
                    coupon_id="SPRING.1", campaign_id="SPRING", member_id=self.y.member_id,
                    issued_at=NOW,
                )
            )  # fmt: skip
        for app in (self.a, self.b):
            follow(engine, app)

    def merge(self, old_cards: OldCards = OldCards.KEEP, **kw: Any):
        with Session(self.engine) as s, s.begin():
            return merge_members(
                s,
                kw.get("keep", self.x.card_no),
                kw.get("absorb", self.y.card_no),
                old_cards,
                kw.get("note", "same person, two cards (ticket 88)"),
                "ops-li",
                NOW + timedelta(hours=1),
                ids,
            )

    def balance(self, member_id: str) -> int:
        with Session(self.engine) as s:
            member = s.get(CentralMember, member_id)
            assert member is not None
            return member.balance


def hq_state(engine: Engine) -> tuple[Any, ...]:
    """Everything a merge changes at HQ."""
    with Session(engine) as s:
        return (
            s.execute(
                select(
                    CentralMember.id,
                    CentralMember.balance,
                    CentralMember.merged_into,
                    CentralMember.overdraft_flagged,
                ).order_by(CentralMember.id)
            ).all(),
            s.execute(select(CentralCard.card_no, CentralCard.member_id, CentralCard.state)).all(),
            s.execute(select(CentralLot.id, CentralLot.member_id)).all(),
            s.execute(select(CampaignCoupon.coupon_id, CampaignCoupon.member_id)).all(),
            s.scalar(select(func.count()).select_from(CentralEntry)),
            s.scalar(select(func.count()).select_from(FeedItem)),
            s.scalar(select(func.count()).select_from(MemberHolder)),
            s.scalar(select(func.count()).select_from(MemberMerge)),
        )


def kiosk_balance(app: AppContext, member_id: str) -> int:
    with app.db.read() as s:
        member = s.get(Member, member_id)
        assert member is not None
        return member.balance


def test_a_merge_moves_everything_to_the_kept_member_at_hq_and_both_stores(engine, tmp_path):
    c = Chain(engine, tmp_path)
    x_before, y_before = c.balance(c.x.member_id), c.balance(c.y.member_id)
    assert y_before > 500
    outboxes = {app.device_id: outbox_ids(app) for app in (c.a, c.b)}

    report = c.merge()

    assert (report.kept_member_id, report.absorbed_member_id) == (c.x.member_id, c.y.member_id)
    assert report.points == y_before and report.kept_balance == x_before + y_before
    assert report.cards == [c.y.card_no] and report.lots == 1 and report.coupons == 1
    assert report.stores == ["S001", "S002"]
    with Session(engine) as s:
        assert balances(s) == {m: b for m, b in ledger_sums(s).items()}
        y = s.get(CentralMember, c.y.member_id)
        assert y is not None and y.merged_into == c.x.member_id and y.balance == 0
        card = s.get(CentralCard, c.y.card_no)
        assert card is not None and (card.member_id, card.state) == (c.x.member_id, "active")
        assert {lot.member_id for lot in s.scalars(select(CentralLot))} == {c.x.member_id}
        assert s.scalar(select(CampaignCoupon.member_id)) == c.x.member_id
        moves = s.execute(
            select(CentralEntry.member_id, CentralEntry.kind, CentralEntry.points, CentralEntry.ref)
            .where(CentralEntry.kind.in_([MERGE_IN, MERGE_OUT]))
            .order_by(CentralEntry.kind)
        ).tuples()
        ref = f"merge:{report.merge_id}"
        assert list(moves) == [
            (c.x.member_id, MERGE_IN, y_before, ref),
            (c.y.member_id, MERGE_OUT, -y_before, ref),
        ]
        record = s.get(MemberMerge, report.merge_id)
        assert record is not None and (record.actor, record.old_cards) == ("ops-li", "keep")
        assert record.note == "same person, two cards (ticket 88)"
        assert json.loads(record.before)["absorbed"]["balance"] == y_before
        assert json.loads(record.after)["kept"]["cards"] == {
            c.x.card_no: "active",
            c.y.card_no: "active",
        }
        assert y.phone_hash is not None  # a store that meets Y's phone is sent X
        assert find_member(s, phone_hash=y.phone_hash) == c.x.member_id
        held = holders(s, [c.x.member_id, c.y.member_id])
        assert held[c.x.member_id] == held[c.y.member_id] == {"S001", "S002"}

    for app in (c.a, c.b):
        follow(engine, app)
        # The old card of Y identifies X at both stores, with X's balance at HQ.
        view = identify(app, c.y.card_no)
        assert view.member_id == c.x.member_id
        assert view.balance == kiosk_balance(app, c.x.member_id) == x_before + y_before
        assert kiosk_balance(app, c.y.member_id) == 0
        assert identify(app, c.x.card_no).member_id == c.x.member_id
        if app is c.b:  # Y's phone finds X (at Y's store: the test kiosks' lookup keys differ)
            assert show_member(app, phone="13900139000").member_id == c.x.member_id
        with app.db.read() as s:
            assert {lot.member_id for lot in s.scalars(select(PointsLot))} == {c.x.member_id}
            assert s.get(Member, c.y.member_id).merged_into == c.x.member_id
            assert s.get(Card, c.y.card_no).member_id == c.x.member_id
        # The history: the merge with its note, and Y's purchase under X.
        lines = show_member(app, card_no=c.x.card_no, history=20).history
        merged = [h for h in lines if h.kind == MERGE_IN]
        assert [(h.points, h.note) for h in merged] == [
            (y_before, "same person, two cards (ticket 88)")
        ]
        assert any(h.kind == "purchase" and h.ref == "B-1" for h in lines)
        assert not any(h.kind == MERGE_OUT for h in lines)
        text = render_member(show_member(app, card_no=c.x.card_no, history=20))
        assert "records merged" in text and "(same person, two cards (ticket 88))" in text
        report_ok = verify_ledger(app)
        assert report_ok.ok, report_ok.problems
        assert outbox_ids(app) == outboxes[app.device_id]  # nothing of the merge goes back
        # X spends at B with the points that came from Y's lots; the ledger still verifies.
        accrue_purchase(app, c.y.card_no, 1_000, f"{app.store_id}-after")
        assert verify_ledger(app).ok

    # Applying the feed again changes nothing (the snapshots are idempotent).
    for app in (c.a, c.b):
        before = kiosk_balance(app, c.x.member_id)
        follow(engine, app)
        assert kiosk_balance(app, c.x.member_id) == before


def test_blocked_old_cards_are_refused_at_both_stores(engine, tmp_path):
    c = Chain(engine, tmp_path)
    report = c.merge(OldCards.BLOCK)
    assert report.old_cards == "block"
    with Session(engine) as s:
        card = s.get(CentralCard, c.y.card_no)
        assert card is not None and (card.member_id, card.state) == (c.x.member_id, "blocked")
    for app in (c.a, c.b):
        follow(engine, app)
        with pytest.raises(Refusal) as refused:
            identify(app, c.y.card_no)
        assert refused.value.code == "card_blocked"
        assert identify(app, c.x.card_no).balance == c.balance(c.x.member_id)
        assert verify_ledger(app).ok


def test_a_negative_balance_moves_and_the_overdraft_flag_follows(engine, tmp_path):
    c = Chain(engine, tmp_path)
    y = c.y.member_id
    owed = -(c.balance(y) + 250)  # the same points redeemed at two offline stores, say
    with Session(engine) as s, s.begin():
        s.add(
            CentralEntry(
                id=ids.new(), member_id=y, kind="redemption", points=owed, lot_id=None,
                ref="offline-2", store_id="S002", device_id="K009", at=NOW, event_id=ids.new(),
            )
        )  # fmt: skip
        add_to_balances(s, {y: owed}, NOW)
        s.execute(update(CentralMember).where(CentralMember.id == y).values(overdraft_flagged=True))
        s.add(Alert(kind="overdraft", subject=y, detail="-250", raised_at=NOW))
    x_before = c.balance(c.x.member_id)
    assert c.balance(y) == -250

    report = c.merge(keep=c.x.member_id, absorb=y)

    assert report.points == -250 and report.kept_balance == x_before - 250
    with Session(engine) as s:
        assert balances(s) == ledger_sums(s)
        assert not s.get(CentralMember, y).overdraft_flagged
        kept = s.get(CentralMember, c.x.member_id)
        assert kept is not None and kept.overdraft_flagged == (kept.balance < 0)
        open_alerts = set(
            s.scalars(
                select(Alert.subject).where(Alert.cleared_at.is_(None), Alert.kind == "overdraft")
            )
        )
        assert y not in open_alerts
        assert (c.x.member_id in open_alerts) == (kept.balance < 0)
    for app in (c.a, c.b):
        follow(engine, app)
        assert kiosk_balance(app, c.x.member_id) == x_before - 250
        assert kiosk_balance(app, y) == 0
        with app.db.read() as s:
            assert not s.get(Member, y).overdraft_flagged
        assert verify_ledger(app).ok, verify_ledger(app).problems


def test_a_refused_merge_changes_nothing(engine, tmp_path):
    c = Chain(engine, tmp_path)
    z = register_member(c.a, "13700137000", consent=True)
    send(engine, c.a)
    with Session(engine) as s, s.begin():
        s.execute(update(CentralMember).where(CentralMember.id == z.member_id).values(deleted=True))
    before = hq_state(engine)

    def refused(kind: type[KioskError], code: str, **kw: Any) -> None:
        with pytest.raises(kind) as caught:
            c.merge(**kw)
        assert caught.value.code == code, caught.value
        assert hq_state(engine) == before

    refused(Refusal, "merge_same_member", keep=c.x.card_no, absorb=c.x.member_id)
    refused(NotFound, "unknown_card", absorb="2900000999994")
    refused(NotFound, "unknown_member", absorb="01J0000000000000000000000Z")
    refused(Refusal, "merge_member_deleted", absorb=z.card_no)
    refused(Refusal, "merge_member_deleted", keep=z.card_no)
    refused(InvalidInput, "merge_note_missing", note="  ")
    refused(InvalidInput, "merge_note_missing", note=None)

    c.merge()
    after = hq_state(engine)
    with pytest.raises(Refusal) as caught:
        c.merge(keep=c.x.member_id, absorb=c.y.member_id)
    assert caught.value.code == "merge_already_merged"
    with pytest.raises(Refusal):
        c.merge(keep=c.y.member_id, absorb=z.member_id)
    assert hq_state(engine) == after


def hq_cli(db: str, *args: str) -> Ran:
    return run_kiosk("hq", "--db", db, "member", "merge", *args)


def test_the_command_merges_and_refuses_in_one_line(tmp_path):
    db = sqlite_hq_url(tmp_path / "hq.db")
    engine = make_hq_engine(db)
    try:
        c = Chain(engine, tmp_path)
        before = hq_state(engine)
        no_note = hq_cli(db, "--keep", c.x.card_no, "--absorb", c.y.card_no, "--old-cards", "keep")
        assert no_note.returncode != 0
        assert no_note.stderr.strip().splitlines() == [
            "error: a merge needs a note saying why (--note)"
        ]
        same = hq_cli(
            db, "--keep", c.x.card_no, "--absorb", c.x.card_no, "--old-cards", "keep",
            "--note", "dup",
        )  # fmt: skip
        assert same.returncode != 0 and len(same.stderr.strip().splitlines()) == 1
        assert "nothing to merge" in same.stderr
        assert hq_state(engine) == before
        done = hq_cli(
            db, "--keep", c.x.card_no, "--absorb", c.y.member_id, "--old-cards", "block",
            "--note", "两张卡同一人", "--actor", "ops-wang", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["absorbed_member_id"] == c.y.member_id
        assert result["cards"] == [c.y.card_no] and result["old_cards"] == "block"
        with Session(engine) as s:
            record = s.get(MemberMerge, result["merge_id"])
            assert record is not None and (record.actor, record.note) == (
                "ops-wang",
                "两张卡同一人",
            )
        again = hq_cli(
            db, "--keep", c.x.card_no, "--absorb", c.y.member_id, "--old-cards", "keep",
            "--note", "again",
        )  # fmt: skip
        assert again.returncode != 0 and "already" in again.stderr
    finally:
        engine.dispose()


def test_a_store_that_fetches_the_kept_member_later_gets_the_merged_record_too(engine, tmp_path):
    c = Chain(engine, tmp_path)
    c.merge()
    d = kiosk(tmp_path, "K003", "S003", 100_000)
    from hq.feeds import fetch

    with Session(engine) as s, s.begin():
        snap, items = fetch(s, HQ_VAULT, "S003", NOW + timedelta(hours=2), card_no=c.y.card_no)
    assert snap is not None and snap.member_id == c.x.member_id
    assert snap.merged_from == [c.y.member_id]
    assert [m for _, _, m in items] == [c.y.member_id, c.x.member_id]
    follow(engine, d)
    assert identify(d, c.y.card_no).member_id == c.x.member_id
    assert kiosk_balance(d, c.x.member_id) == c.balance(c.x.member_id)
    with d.db.read() as s:
        assert {lot.member_id for lot in s.scalars(select(PointsLot))} == {c.x.member_id}
        assert (s.scalar(select(func.count()).select_from(LedgerEntry)) or 0) > 0
    assert verify_ledger(d).ok


def test_points_booked_on_a_merged_record_afterwards_are_kept_and_alerted(engine, tmp_path):
    c = Chain(engine, tmp_path)
    c.merge()
    # Store B used Y's card before it heard of the merge (offline, say).
    accrue_purchase(c.b, c.y.card_no, 8_000, "B-late")
    send(engine, c.b)
    with Session(engine) as s:
        assert balances(s) == ledger_sums(s)
        assert c.balance(c.y.member_id) > 0
        alert = s.scalars(select(Alert).where(Alert.kind == "merged_member_points")).one()
        assert alert.subject == c.y.member_id and c.x.member_id in alert.detail
    follow(engine, c.b)
    assert verify_ledger(c.b).ok


def test_a_merged_member_merged_again_takes_every_card_and_history_along(engine, tmp_path):
    c = Chain(engine, tmp_path)
    z = register_member(c.a, "13700137000", consent=True)
    send(engine, c.a)
    c.merge()  # Y into X
    c.merge(keep=z.card_no, absorb=c.x.member_id, note="third registration")  # X into Z
    with Session(engine) as s:
        assert balances(s) == ledger_sums(s)
    for app in (c.a, c.b):
        follow(engine, app)
        for card_no in (c.x.card_no, c.y.card_no, z.card_no):
            view = identify(app, card_no)
            assert (view.member_id, view.balance) == (z.member_id, c.balance(z.member_id))
        history = show_member(app, card_no=z.card_no, history=50).history
        assert {h.ref for h in history} >= {"A-1", "B-1"}
        assert {h.note for h in history if h.kind == MERGE_IN} == {
            "third registration",
            "same person, two cards (ticket 88)",
        }
        report = verify_ledger(app)
        assert report.ok, report.problems
