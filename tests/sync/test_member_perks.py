"""A member's perks follow them through the chain: the name and birthday given at one store's
kiosk reach HQ with the registration, and every store that holds the member knows them, so
the birthday gift can be claimed at any store (once a year, wherever it was claimed)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from edge.domain.errors import Refusal
from edge.services import personal as kiosk_personal
from edge.services.members import register_member, show_member
from edge.services.points import claim_birthday_bonus
from edge.storage.models import Member
from edge.sync.agent import Agent
from hq import personal
from hq.models import CentralMember
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import caught_up, drained, hq_config


def test_the_birthday_gift_works_at_another_store(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    a = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    b = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 50_000))
    runners = [Runner(hq.run), Runner(Agent(a).run), Runner(Agent(b).run)]
    today = datetime.now(UTC).astimezone(a.tz).date()
    born = date(1950, today.month, min(today.day, 28))
    try:
        member = register_member(
            a, "13800138000", consent=True, name="王秀英", birthday=born.isoformat()
        )
        wait_until(drained(a), 20, "the registration at HQ")
        with Session(hq.engine) as s:
            central = s.get(CentralMember, member.member_id)
            assert central is not None and central.birth_month == born.month
            assert personal.name_of(hq.vault, central) == "王秀英"
            assert personal.birthday_of(hq.vault, central) == born
        with hq.engine.connect() as conn:  # HQ's tables themselves show neither
            raw = repr(conn.execute(text("SELECT * FROM hq_member")).all())
            raw += repr(conn.execute(text("SELECT payload FROM hq_event")).all())
        assert "王秀英" not in raw and born.isoformat() not in raw

        there = show_member(b, card_no=member.card_no)  # store B fetches the member from HQ
        assert there.birthday_month and not there.birthday_bonus_claimed
        assert there.name_masked == "王**"
        with b.db.read() as s:  # store B keeps them encrypted with its own data key
            held = s.get(Member, member.member_id)
            assert held is not None and held.store_id == "S001"
            assert kiosk_personal.name_of(b, held) == "王秀英"
            assert kiosk_personal.birthday_of(b, held) == born
            assert held.name_cipher is not None and "王秀英".encode() not in held.name_cipher
        bonus = claim_birthday_bonus(b, member.card_no)
        assert bonus.points == b.config.points.birthday_bonus_points
        wait_until(drained(b), 20, "the birthday gift at HQ")
        wait_until(caught_up(a, hq.engine), 20, "store A's replica")
        assert show_member(a, card_no=member.card_no).balance == bonus.balance
        for store in (b, a):  # once a year, wherever it was claimed
            with pytest.raises(Refusal) as err:
                claim_birthday_bonus(store, member.card_no)
            assert err.value.code == "birthday_claimed"
        assert show_member(a, card_no=member.card_no).birthday_bonus_claimed
    finally:
        for r in reversed(runners):
            r.stop()
        a.close()
        b.close()
