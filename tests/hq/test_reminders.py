"""Reminders to members: planned once each for members with consent, delivered when due,
held in quiet hours and by the weekly cap, cancelled when consent is withdrawn or the
reminder is pointless, retried when the sender fails (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge.security.personal import PhoneVault
from hq.audit import Actor
from hq.contact import set_message_consent
from hq.messages import CANCELLED, FAILED, QUEUED, SENT, FileSender, SendFailed, enqueue
from hq.models import Campaign, CampaignCoupon, CentralEntry, CentralMember, HqMessage
from hq.reminders import (
    BIRTHDAY,
    COUPON,
    OTP,
    POINTS_EXPIRY,
    DeliveryReport,
    MessageSettings,
    deliver_due,
    plan_reminders,
)

VAULT = PhoneVault(bytes(range(32)), bytes(range(32, 64)))
# 7 December 2026, 10:00 in Shanghai: outside the default quiet hours (21:00-09:00)
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
SETTINGS = MessageSettings(tries=3, first_wait_s=60, max_wait_s=600)
PHONE = "13812345678"


def _member(
    session: Session,
    member_id: str,
    *,
    consent: bool = True,
    birth_month: int | None = None,
    phone: str = PHONE,
) -> CentralMember:
    member = CentralMember(
        id=member_id,
        store_id="S001",
        tier="basic",
        phone_masked=phone[:3] + "****" + phone[-4:],
        phone_enc=VAULT.encrypt(phone),
        phone_hash=VAULT.lookup_hash(phone),
        birth_month=birth_month,
        created_at=NOW - timedelta(days=400),
        updated_at=NOW - timedelta(days=400),
    )
    session.add(member)
    if consent:
        set_message_consent(session, member, "2026-12", now=NOW, actor=Actor("kiosk", "event"))
    return member


_entry_no = iter(range(1, 1_000_000))


def _entry(
    session: Session, member_id: str, points: int, lot_id: str, expires_at: datetime | None
) -> None:
    n = next(_entry_no)
    session.add(
        CentralEntry(
            id=f"E{n:025d}",
            member_id=member_id,
            kind="purchase" if points > 0 else "redemption",
            points=points,
            lot_id=lot_id,
            ref=f"r{n}",
            store_id="S001",
            device_id="K1",
            at=NOW - timedelta(days=300),
            event_id=f"V{n:025d}",
            available_at=NOW - timedelta(days=300) if points > 0 else None,
            expires_at=expires_at if points > 0 else None,
        )
    )


def _coupon(session: Session, member_id: str, coupon_id: str, *, campaign: str = "C1") -> None:
    if session.get(Campaign, campaign) is None:
        session.add(
            Campaign(
                campaign_id=campaign,
                title="满100减10",
                kind="amount_off",
                value_cents=1000,
                threshold_cents=10000,
                valid_from=NOW - timedelta(days=1),
                valid_until=NOW + timedelta(days=30),
                audience="all",
                pool_total=100,
                per_member_limit=5,
                issued=0,
                created_at=NOW - timedelta(days=1),
                created_by="hq",
            )
        )
        session.flush()
    session.add(
        CampaignCoupon(
            coupon_id=coupon_id,
            campaign_id=campaign,
            member_id=member_id,
            issued_at=NOW - timedelta(hours=1),
        )
    )


def _setup(engine: Engine, build: Callable[[Session], None]) -> None:
    with Session(engine) as session, session.begin():
        build(session)


def _plan(engine: Engine, now: datetime = NOW, settings: MessageSettings = SETTINGS):
    return plan_reminders(lambda: Session(engine), VAULT, settings, now, sender_name="file")


def _deliver(engine: Engine, sender, now: datetime, settings: MessageSettings = SETTINGS):
    return deliver_due(engine, VAULT, sender, settings, lambda: now)


def _messages(engine: Engine) -> list[HqMessage]:
    with Session(engine) as session:
        return list(session.scalars(select(HqMessage).order_by(HqMessage.kind, HqMessage.id)))


# 31 December 2026 in Shanghai: points earned in 2025-12 lapse at midnight starting 1 January
EXPIRY = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)


def test_only_members_with_consent_get_reminders(engine: Engine, tmp_path: Path):
    def build(s: Session) -> None:
        _member(s, "M1")
        _member(s, "M2", consent=False, phone="13900001111")
        for member_id in ("M1", "M2"):
            _entry(s, member_id, 120, f"L{member_id}", EXPIRY)

    _setup(engine, build)
    report = _plan(engine)
    assert report.members == 1 and report.queued[POINTS_EXPIRY] == 1
    [message] = _messages(engine)
    assert message.member_id == "M1" and message.phone_masked == "138****5678"
    assert message.body.startswith("【会员中心】您有120积分将于12月31日到期")
    assert message.body.endswith("回复TD退订") and "5678" not in message.body
    sender = FileSender(tmp_path / "sent.jsonl")
    assert _deliver(engine, sender, NOW).sent == 1
    assert [(m["to"], m["text"]) for m in sender.sent()] == [(PHONE, message.body)]


def test_points_expiring_are_reminded_once_per_expiry_date(engine: Engine):
    later = EXPIRY + timedelta(days=14)  # 14 January 2027

    def build(s: Session) -> None:
        _member(s, "M1")
        _entry(s, "M1", 100, "L1", EXPIRY)
        _entry(s, "M1", 50, "L2", EXPIRY)  # same date: one reminder for 150
        _entry(s, "M1", 30, "L3", later)
        _entry(s, "M1", -30, "L3", None)  # spent: nothing left to remind of
        _entry(s, "M1", 70, "L4", NOW + timedelta(days=60))  # beyond 30 days

    _setup(engine, build)
    assert _plan(engine).queued[POINTS_EXPIRY] == 1
    assert _plan(engine).queued[POINTS_EXPIRY] == 0  # planned again: nothing new
    assert _plan(engine, NOW + timedelta(days=1)).queued[POINTS_EXPIRY] == 0
    [message] = _messages(engine)
    assert "150积分将于12月31日到期" in message.body
    assert message.dedupe_key == "points_expiry:M1:2026-12-31"


def test_the_birthday_month_is_reminded_once_a_year(engine: Engine):
    def build(s: Session) -> None:
        _member(s, "M1", birth_month=12)
        _member(s, "M2", birth_month=11, phone="13900001111")

    _setup(engine, build)
    assert _plan(engine).queued[BIRTHDAY] == 1
    assert _plan(engine, NOW + timedelta(days=10)).queued[BIRTHDAY] == 0
    next_year = NOW.replace(year=2027)
    assert _plan(engine, next_year).queued[BIRTHDAY] == 1
    keys = [m.dedupe_key or "" for m in _messages(engine)]
    assert sorted(keys) == ["birthday:M1:2026", "birthday:M1:2027"]


def test_a_coupon_issued_by_a_campaign_is_reminded_once(engine: Engine):
    def build(s: Session) -> None:
        _member(s, "M1")
        _coupon(s, "M1", "CP-1")

    _setup(engine, build)
    assert _plan(engine).queued[COUPON] == 1
    assert _plan(engine).queued[COUPON] == 0
    [message] = _messages(engine)
    assert "优惠券「满100减10」" in message.body and "1月6日前有效" in message.body


def test_withdrawing_consent_before_sending_cancels_the_reminder(engine: Engine, tmp_path: Path):
    def build(s: Session) -> None:
        _member(s, "M1", birth_month=12)

    _setup(engine, build)
    assert _plan(engine).queued[BIRTHDAY] == 1
    with Session(engine) as s, s.begin():
        member = s.get(CentralMember, "M1")
        assert member is not None
        set_message_consent(s, member, None, now=NOW, actor=Actor("member", "member"))
    sender = FileSender(tmp_path / "sent.jsonl")
    report = _deliver(engine, sender, NOW + timedelta(minutes=1))
    assert (report.sent, report.cancelled) == (0, 1)
    assert sender.sent() == []
    [message] = _messages(engine)
    assert (message.status, message.phone_enc) == (CANCELLED, None)
    assert message.last_error == "cancelled: no consent to messages"
    assert _plan(engine).queued[BIRTHDAY] == 0  # and none is planned while it is withdrawn


def test_a_reminder_waits_for_the_end_of_quiet_hours(engine: Engine, tmp_path: Path):
    evening = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    morning = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai

    def build(s: Session) -> None:
        _member(s, "M1", birth_month=12)

    _setup(engine, build)
    assert _plan(engine, evening).queued[BIRTHDAY] == 1
    [message] = _messages(engine)
    assert message.due_at == morning
    sender = FileSender(tmp_path / "sent.jsonl")
    assert _deliver(engine, sender, evening + timedelta(hours=2)).sent == 0
    assert sender.sent() == []
    assert _deliver(engine, sender, morning).sent == 1
    assert len(sender.sent()) == 1


def test_a_reminder_come_due_inside_quiet_hours_is_held_until_they_end(
    engine: Engine, tmp_path: Path
):
    def build(s: Session) -> None:
        _member(s, "M1", birth_month=12)

    _setup(engine, build)
    _plan(engine)  # due at once (10:00)
    night = datetime(2026, 12, 7, 13, 30, tzinfo=UTC)  # the worker runs again at 21:30
    sender = FileSender(tmp_path / "sent.jsonl")
    report = _deliver(engine, sender, night)
    assert (report.sent, report.held) == (0, 1)
    [message] = _messages(engine)
    assert message.status == QUEUED
    assert message.due_at == datetime(2026, 12, 8, 1, 0, tzinfo=UTC)


def test_the_weekly_cap_holds_a_reminder_until_the_window_frees(engine: Engine, tmp_path: Path):
    def build(s: Session) -> None:
        _member(s, "M1")
        for n in (1, 2, 3):
            _coupon(s, "M1", f"CP-{n}")

    _setup(engine, build)
    assert _plan(engine).queued[COUPON] == 3
    sender = FileSender(tmp_path / "sent.jsonl")
    report = _deliver(engine, sender, NOW)
    assert (report.sent, report.held) == (2, 1)
    held = [m for m in _messages(engine) if m.status == QUEUED]
    assert len(held) == 1 and held[0].due_at == NOW + timedelta(days=7)
    assert _deliver(engine, sender, NOW + timedelta(days=6)).sent == 0
    assert _deliver(engine, sender, NOW + timedelta(days=7)).sent == 1
    assert len(sender.sent()) == 3


def test_the_cap_and_quiet_hours_are_the_chains_own_settings(engine: Engine, tmp_path: Path):
    settings = SETTINGS.model_copy(
        update={"weekly_cap": 3, "quiet_start": "12:00", "quiet_end": "13:30"}
    )

    def build(s: Session) -> None:
        _member(s, "M1")
        for n in (1, 2, 3, 4):
            _coupon(s, "M1", f"CP-{n}")

    _setup(engine, build)
    noon = datetime(2026, 12, 7, 4, 15, tzinfo=UTC)  # 12:15 in Shanghai: quiet by these settings
    assert _plan(engine, noon, settings).queued[COUPON] == 4
    assert {m.due_at for m in _messages(engine)} == {datetime(2026, 12, 7, 5, 30, tzinfo=UTC)}
    sender = FileSender(tmp_path / "sent.jsonl")
    assert _deliver(engine, sender, noon, settings).sent == 0
    after = datetime(2026, 12, 7, 5, 30, tzinfo=UTC)  # 13:30: quiet hours over
    report = _deliver(engine, sender, after, settings)
    assert (report.sent, report.held) == (3, 1)  # three a week, not the default two
    assert len(sender.sent()) == 3


def test_a_reminder_held_by_the_cap_is_dropped_once_its_points_have_expired(
    engine: Engine, tmp_path: Path
):
    soon = datetime(2026, 12, 9, 16, 0, tzinfo=UTC)  # lapse at midnight starting 10 December

    def build(s: Session) -> None:
        _member(s, "M1")
        _coupon(s, "M1", "CP-1")
        _coupon(s, "M1", "CP-2")
        _entry(s, "M1", 40, "L1", soon)

    _setup(engine, build)
    _plan(engine)
    sender = FileSender(tmp_path / "sent.jsonl")
    # the two coupons go first and fill the week
    with Session(engine) as s, s.begin():
        for m in s.scalars(select(HqMessage).where(HqMessage.kind == POINTS_EXPIRY)):
            m.due_at = NOW + timedelta(minutes=1)
    assert _deliver(engine, sender, NOW).sent == 2
    report = _deliver(engine, sender, NOW + timedelta(minutes=1))
    assert report.held == 1
    report = _deliver(engine, sender, NOW + timedelta(days=7))
    assert (report.sent, report.cancelled) == (0, 1)
    [expiry] = [m for m in _messages(engine) if m.kind == POINTS_EXPIRY]
    assert expiry.status == CANCELLED and expiry.last_error == "dropped: the points have expired"
    assert len(sender.sent()) == 2


class FailsFor:
    """Refuses (retryably) every message whose text holds ``word``; delivers the rest."""

    name = "failing"

    def __init__(self, word: str) -> None:
        self.word, self.calls = word, 0
        self.delivered: list[str] = []

    def send(self, to: str, text: str) -> str:
        self.calls += 1
        if self.word in text:
            raise SendFailed("gateway answered 503")
        self.delivered.append(text)
        return f"ref-{self.calls}"


def test_a_failing_send_is_retried_with_backoff_then_recorded_failed(engine: Engine):
    def build(s: Session) -> None:
        _member(s, "M1", birth_month=12)
        _coupon(s, "M1", "CP-1")

    _setup(engine, build)
    _plan(engine)
    sender = FailsFor("优惠券")
    report = _deliver(engine, sender, NOW)
    assert (report.sent, report.retrying) == (1, 1)  # the birthday went all the same
    [coupon] = [m for m in _messages(engine) if m.kind == COUPON]
    assert (coupon.status, coupon.attempts) == (QUEUED, 1)
    assert coupon.due_at == NOW + timedelta(seconds=60)
    assert _deliver(engine, sender, NOW + timedelta(seconds=59)).retrying == 0  # not yet
    assert _deliver(engine, sender, NOW + timedelta(seconds=60)).retrying == 1
    [coupon] = [m for m in _messages(engine) if m.kind == COUPON]
    assert coupon.due_at == NOW + timedelta(seconds=180)  # the wait doubled
    assert _deliver(engine, sender, NOW + timedelta(seconds=180)).failed == 1
    by_kind = {m.kind: m for m in _messages(engine)}
    assert by_kind[COUPON].status == FAILED and by_kind[COUPON].attempts == 3
    assert by_kind[COUPON].last_error == "gateway answered 503"
    assert by_kind[COUPON].phone_enc is None and by_kind[COUPON].phone_masked == "138****5678"
    assert by_kind[BIRTHDAY].status == SENT and by_kind[BIRTHDAY].provider_ref == "ref-1"
    assert sender.calls == 4 and len(sender.delivered) == 1


def test_a_sign_in_code_ignores_consent_quiet_hours_and_the_cap(engine: Engine, tmp_path: Path):
    night = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai

    def build(s: Session) -> None:
        _member(s, "M1", consent=False)
        enqueue(
            s, VAULT, kind=OTP, member_id="M1", phone=PHONE, text="验证码 123456",
            sender="file", now=night,
        )  # fmt: skip

    _setup(engine, build)
    sender = FileSender(tmp_path / "sent.jsonl")
    assert _deliver(engine, sender, night).sent == 1
    assert sender.sent()[0]["text"] == "验证码 123456"


def test_two_workers_send_each_message_once(engine: Engine):
    def build(s: Session) -> None:
        for n in range(30):
            enqueue(
                s, VAULT, kind=OTP, member_id=None, phone=f"139{n:08d}", text=f"code {n}",
                sender="file", now=NOW,
            )  # fmt: skip

    _setup(engine, build)

    class Counting:
        name = "counting"

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.texts: list[str] = []

        def send(self, to: str, text: str) -> str:
            with self.lock:
                self.texts.append(text)
            return text

    sender = Counting()
    reports: list[DeliveryReport] = []
    workers = [
        threading.Thread(target=lambda: reports.append(_deliver(engine, sender, NOW)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(sender.texts) == sorted(f"code {n}" for n in range(30))
    assert sum(r.sent for r in reports) == 30
    assert all(m.status == SENT for m in _messages(engine))


def test_a_sign_in_code_the_gateway_could_not_take_in_time_is_dropped(engine: Engine):
    def build(s: Session) -> None:
        enqueue(
            s, VAULT, kind=OTP, member_id=None, phone=PHONE, text="验证码 123456",
            sender="file", now=NOW,
        )  # fmt: skip

    _setup(engine, build)
    sender = FailsFor("验证码")
    assert _deliver(engine, sender, NOW).retrying == 1
    report = _deliver(engine, sender, NOW + timedelta(seconds=601))
    assert (report.cancelled, sender.calls) == (1, 1)
    [message] = _messages(engine)
    assert message.status == CANCELLED and message.phone_enc is None
    assert message.last_error == "dropped: the sign-in code is too old"
