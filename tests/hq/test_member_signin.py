"""The member page's sign-in rules and account view on HQ's database, on SQLite and on
PostgreSQL: codes, limits per number and address, the lockout, sessions, expiring points."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput
from edge.domain.ids import IdFactory
from edge.protocol import LedgerEntryData
from edge.security.personal import PhoneVault
from hq import member_account, member_signin
from hq.member_signin import CodeSent, MemberSignedIn, NotAMember, Refused
from hq.messages import FileSender, Sender, SendFailed
from hq.models import CentralCard, CentralEntry, CentralMember, HqMessage, MemberSignInRequest
from tests.hq.database import HQ_VAULT

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
VAULT = PhoneVault(bytes(range(32)), secrets.token_bytes(32))
PHONE = "13800138000"
IDS = IdFactory()


def _member(engine: Engine, member_id: str = "M" * 26) -> None:
    with Session(engine) as s, s.begin():
        s.add(
            CentralMember(
                id=member_id, store_id="S001", tier="normal", phone_masked="138****8000",
                balance=0, overdraft_flagged=False, deleted=False, created_at=NOW,
                updated_at=NOW, phone_hash=VAULT.lookup_hash(PHONE),
            )
        )  # fmt: skip
        s.add(CentralCard(card_no="1000017", member_id=member_id, state="active", store_id="S1"))


def _ask(
    engine: Engine, sender: Sender, at: datetime, phone: str = PHONE, address: str = "a"
) -> CodeSent | NotAMember | Refused:
    with Session(engine) as s, s.begin():
        return member_signin.request_code(s, VAULT, sender, phone, address, at)


def _enter(engine: Engine, code: str, at: datetime) -> MemberSignedIn | Refused:
    with Session(engine) as s, s.begin():
        return member_signin.sign_in(s, VAULT.lookup_hash, PHONE, code, "a", at)


def _code(sender: FileSender) -> str:
    return str(re.findall(r"\b(\d{6})\b", sender.sent()[-1]["text"])[0])


def test_a_code_signs_in_once_and_the_session_is_the_members(engine: Engine, tmp_path: Path):
    _member(engine)
    sender = FileSender(tmp_path / "sent.jsonl")
    sent = _ask(engine, sender, NOW)
    assert isinstance(sent, CodeSent) and sent.delivered and sent.phone_masked == "138****8000"
    with Session(engine) as s:  # the record of the message does not hold the code
        message = s.scalars(select(HqMessage)).one()
        assert (message.kind, message.status) == ("otp", "sent")
        assert _code(sender) not in message.body and "******" in message.body
    signed = _enter(engine, _code(sender), NOW + timedelta(minutes=4))
    assert isinstance(signed, MemberSignedIn) and signed.member_id == "M" * 26
    again = _enter(engine, _code(sender), NOW + timedelta(minutes=4))
    assert isinstance(again, Refused) and again.code == "no_code"
    with Session(engine) as s, s.begin():
        current = member_signin.current(s, signed.token, NOW + timedelta(days=6))
        assert current is not None and current.member_id == "M" * 26
        assert member_signin.current(s, signed.token, NOW + timedelta(days=14)) is None
        member_signin.sign_out(s, signed.token)
        assert member_signin.current(s, signed.token, NOW) is None


def test_limits_per_number_and_address_and_the_lockout(engine: Engine, tmp_path: Path):
    _member(engine)
    sender = FileSender(tmp_path / "sent.jsonl")
    assert isinstance(_ask(engine, sender, NOW), CodeSent)
    soon = _ask(engine, sender, NOW + timedelta(seconds=20))
    assert isinstance(soon, Refused) and soon.code == "too_soon"
    assert soon.details == {"wait": "40 s"}
    for n in range(1, member_signin.NUMBER_PER_HOUR):
        assert isinstance(_ask(engine, sender, NOW + timedelta(minutes=2 * n)), CodeSent)
    over = _ask(engine, sender, NOW + timedelta(minutes=20))
    assert isinstance(over, Refused) and over.code == "number_limit"
    # another address, numbers that are no member's: counted, nothing sent
    for n in range(member_signin.ADDRESS_PER_HOUR):
        outcome = _ask(engine, sender, NOW, phone=f"139{n:08d}", address="b")
        assert isinstance(outcome, NotAMember)
    full = _ask(engine, sender, NOW, phone="13700137000", address="b")
    assert isinstance(full, Refused) and full.code == "address_limit"
    assert len(sender.sent()) == member_signin.NUMBER_PER_HOUR
    # wrong codes: the fifth locks the number for 30 minutes, even against the right code
    later = NOW + timedelta(minutes=10)  # the last code (at 8 minutes) is still valid
    right = _code(sender)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    outcomes = [_enter(engine, wrong, later) for _ in range(member_signin.MAX_WRONG)]
    assert [o.code for o in outcomes if isinstance(o, Refused)] == ["wrong_code"] * 4 + ["locked"]
    locked = _enter(engine, right, later)
    assert isinstance(locked, Refused) and locked.code == "locked"
    assert locked.details == {"until": "09:40 UTC"}
    unlocked = later + member_signin.LOCKOUT + timedelta(seconds=1)
    still = _ask(engine, sender, unlocked)  # the lock is over; the hour's 5 codes still count
    assert isinstance(still, Refused) and still.code == "number_limit"
    free = NOW + timedelta(hours=1, minutes=1)
    assert isinstance(_ask(engine, sender, free), CodeSent)
    assert isinstance(_enter(engine, _code(sender), free), MemberSignedIn)
    with Session(engine) as s:  # requests the limits no longer count were cleared
        oldest = s.scalar(select(func.min(MemberSignInRequest.at)).where(
            MemberSignInRequest.address == "a"))  # fmt: skip
        assert oldest is not None and oldest > free - timedelta(hours=1)


def test_bad_input_is_refused_and_changes_nothing(engine: Engine, tmp_path: Path):
    sender = FileSender(tmp_path / "sent.jsonl")
    with pytest.raises(InvalidInput):
        _ask(engine, sender, NOW, phone="call me")
    with pytest.raises(InvalidInput):
        _enter(engine, "12ab56", NOW)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(MemberSignInRequest)) == 0


def _entry(points: int, lot: str | None, at: datetime, expires: datetime | None) -> LedgerEntryData:
    return LedgerEntryData(
        id=IDS.new(), member_id="M" * 26, kind="purchase" if points > 0 else "redemption",
        points=points, lot_id=lot, at=at, store_id="S001", device_id="K001",
        expires_at=expires, available_at=at if expires else None,
    )  # fmt: skip


def test_lots_are_used_oldest_expiry_first_as_at_the_kiosk():
    a, b = IDS.new(), IDS.new()
    lots = member_account.open_lots(
        [
            _entry(300, a, NOW, NOW + timedelta(days=10)),
            _entry(500, b, NOW + timedelta(hours=1), NOW + timedelta(days=5)),
            _entry(-600, None, NOW + timedelta(hours=2), None),  # no lot named: soonest first
            _entry(-50, a, NOW + timedelta(hours=3), None),  # its own lot
        ]
    )
    assert [(lot.id, lot.remaining) for lot in lots] == [(a, 150)]


def test_the_account_shows_points_expiring_within_thirty_days(engine: Engine):
    _member(engine)
    soon, later = IDS.new(), IDS.new()
    with Session(engine) as s, s.begin():
        for points, lot, expires in (
            (300, soon, NOW + timedelta(days=12)),
            (200, later, NOW + timedelta(days=90)),
        ):
            s.add(
                CentralEntry(
                    id=IDS.new(), member_id="M" * 26, kind="purchase", points=points, lot_id=lot,
                    ref="r", store_id="S001", device_id="K001", at=NOW - timedelta(days=1),
                    event_id=IDS.new(), available_at=NOW - timedelta(days=1), expires_at=expires,
                )
            )  # fmt: skip
    with Session(engine) as s:
        view = member_account.account(s, HQ_VAULT, "M" * 26, NOW, None)
    assert [(e.points, e.expires_on.isoformat()) for e in view.expiring] == [(300, "2026-12-19")]
    assert view.card_no == "1000017" and not view.card_blocked
    assert view.next is not None and view.next.tier.code == "silver"
    assert [h.points for h in view.history] == [200, 300]  # newest first


class Refusing:
    """A gateway that is down."""

    name = "down"

    def send(self, to: str, text: str) -> str:
        raise SendFailed("gateway timed out", retryable=True)


def test_a_code_the_gateway_could_not_take_is_not_sent_later(engine: Engine):
    _member(engine)
    sent = _ask(engine, Refusing(), NOW)
    assert isinstance(sent, CodeSent) and not sent.delivered
    with Session(engine) as s:
        message = s.scalars(select(HqMessage)).one()
        assert (message.status, message.phone_enc) == ("cancelled", None)
        assert message.last_error == "gateway timed out"
