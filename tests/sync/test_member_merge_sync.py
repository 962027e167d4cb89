"""A member merge at HQ through a real Mosquitto, HQ and two stores' kiosk agents: the card
of the absorbed member (registered at store B) works at stores A and B as the kept member's
card, or is refused there when blocked; both kiosks' ledgers verify and their outboxes carry
nothing of the merge; HQ's balances stay the sums of its entries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import Refusal
from edge.domain.ids import IdFactory
from edge.domain.merges import OldCards
from edge.services.members import identify, register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.storage.models import Card, Member
from edge.sync.agent import Agent
from hq.ledger import balances, ledger_sums
from hq.merges import merge_members
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import drained, hq_config, outbox_ids

POLL = "replica_poll_s = 1.0"


def card_is(app: AppContext, card_no: str, member_id: str, state: str) -> Callable[[], bool]:
    def check() -> bool:
        with app.db.read() as s:
            card = s.get(Card, card_no)
            return card is not None and (card.member_id, card.state) == (member_id, state)

    return check


def merged(app: AppContext, member_id: str, into: str) -> Callable[[], bool]:
    def check() -> bool:
        with app.db.read() as s:
            member = s.get(Member, member_id)
            return member is not None and member.merged_into == into and member.balance == 0

    return check


def test_an_old_card_works_as_the_kept_members_at_both_stores_or_is_refused(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1, extra=POLL))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000, extra=POLL))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    ids = IdFactory()

    def merge(keep: str, absorb: str, old_cards: OldCards) -> int:
        with Session(hq.engine) as s, s.begin():
            report = merge_members(
                s, keep, absorb, old_cards, "one person, two records", "ops", datetime.now(UTC), ids
            )
        return report.kept_balance

    try:
        x = register_member(a, "13800138000", consent=True)
        y = register_member(b, "13900139000", consent=True)
        w = register_member(b, "13700137000", consent=True)
        accrue_purchase(a, x.card_no, 10_000, "A-1")
        accrue_purchase(b, y.card_no, 25_000, "B-1")
        accrue_purchase(b, w.card_no, 5_000, "B-2")
        for app in (a, b):
            wait_until(drained(app), 20, f"{app.device_id}'s events at HQ")
        outboxes = {app.device_id: outbox_ids(app) for app in (a, b)}

        # Y's card kept: at both stores it is X's card now, with X's whole balance.
        kept = merge(x.card_no, y.card_no, OldCards.KEEP)
        for app in (a, b):
            wait_until(card_is(app, y.card_no, x.member_id, "active"), 20, "the card moved")
            wait_until(merged(app, y.member_id, x.member_id), 20, "Y merged at the kiosk")
            view = identify(app, y.card_no)
            assert (view.member_id, view.balance) == (x.member_id, kept)
            report = verify_ledger(app)
            assert report.ok, report.problems
            assert outbox_ids(app)[: len(outboxes[app.device_id])] == outboxes[app.device_id]
        # X buys at store A with Y's old card: the points are X's, at HQ too.
        accrue_purchase(a, y.card_no, 10_000, "A-2")
        wait_until(drained(a), 20, "the purchase at HQ")

        # W's card blocked: refused at both stores with the blocked-card refusal.
        kept = merge(x.member_id, w.card_no, OldCards.BLOCK)
        for app in (a, b):
            wait_until(card_is(app, w.card_no, x.member_id, "blocked"), 20, "the card blocked")
            wait_until(merged(app, w.member_id, x.member_id), 20, "W merged at the kiosk")
            with pytest.raises(Refusal) as refused:
                identify(app, w.card_no)
            assert refused.value.code == "card_blocked"
            assert identify(app, x.card_no).member_id == x.member_id
        wait_until(lambda: identify(b, x.card_no).balance == kept, 20, "A-2 at store B")
        assert identify(a, x.card_no).balance == kept
        for app in (a, b):
            report = verify_ledger(app)
            assert report.ok, report.problems
            wait_until(drained(app), 20, "nothing left to send")
        with Session(hq.engine) as s:
            assert balances(s) == ledger_sums(s)
            assert balances(s)[x.member_id] == kept
    finally:
        for r in runners:
            r.stop()
        for r in runners:
            assert r.error is None
        a.close()
        b.close()
        hq.engine.dispose()
