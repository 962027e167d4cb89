"""Reminders to members, and the delivery of every queued message when it is due.

:func:`plan_reminders` queues what members with consent to messages should hear of, each once
(its ``dedupe_key``): points expiring within ``expiry_days`` (once per expiry date), the
birthday month (once a year), a coupon a campaign issued them (once per coupon).

:func:`deliver_due` sends the queued messages whose time has come, one transaction each, so
several HQ workers can share the queue (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: one
writer at a time). For a reminder it checks again, at the moment of sending:

* consent: withdrawn since it was queued -> cancelled, never sent;
* still worth sending: the points spent or expired, the birthday month over, the coupon used
  or its campaign ended -> cancelled ("dropped"), never sent;
* quiet hours (chain time): it waits until they end;
* the weekly cap (reminders sent to the member in a rolling 7 days): it waits until the
  oldest of them leaves the window, and is checked again then (so it may be dropped).

A sign-in code (kind ``otp``) is exempt from consent, quiet hours and the cap: the member
asked for it. One still undelivered ``otp_max_age_s`` after it was made (the gateway was
down) is dropped: a late code only confuses.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select, text

from edge.domain.errors import KioskError
from edge.domain.points import last_day
from hq.contact import may_message
from hq.messages import CANCELLED, FAILED, QUEUED, SENT, RetryPolicy, Sender, attempt, enqueue
from hq.models import Campaign, CampaignCoupon, CentralEntry, CentralMember, HqMessage

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from edge.security.personal import PhoneVault

__all__ = [
    "BIRTHDAY",
    "COUPON",
    "OTP",
    "POINTS_EXPIRY",
    "DeliveryReport",
    "MessageSettings",
    "PlanReport",
    "QuietHours",
    "deliver_due",
    "plan_reminders",
]

OTP, POINTS_EXPIRY, BIRTHDAY, COUPON = "otp", "points_expiry", "birthday", "coupon"
REMINDER_KINDS = (POINTS_EXPIRY, BIRTHDAY, COUPON)
UNSUBSCRIBE_HINT = "回复TD退订"
WEEK = timedelta(days=7)
_MEMBER_CHUNK = 500
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class MessageSettings(BaseModel):
    """HQ's settings for messages to members (``[messages]`` in HQ's config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: str = Field(
        "",
        title="The sender: file:PATH (development, a JSON line per message) or http:URL (an "
        "SMS gateway)",
        description="no sender: reminders are planned but nothing is sent",
    )
    gateway_token_file: str = Field(
        "",
        title="File holding the SMS gateway's bearer token",
        description="default: the systemd credential sms-gateway-token",
    )
    gateway_timeout_s: float = Field(10.0, gt=0, le=120, title="Gateway answer timeout (s)")
    inbound_token_file: str = Field(
        "",
        title="File holding the token the gateway sends with members' replies (/sms/inbound)",
        description="default: the systemd credential sms-inbound-token; none: replies refused",
    )
    terms_version: str = Field(
        "2026-12",
        min_length=1,
        max_length=32,
        title="Version of the message terms a member agrees to on the member page",
        description="the kiosks' privacy.message_terms_version says the same of theirs",
    )
    timezone: str = Field("Asia/Shanghai", title="The chain's time zone (quiet hours, dates)")
    quiet_start: str = Field("21:00", title="Quiet hours start (HH:MM, chain time)")
    quiet_end: str = Field(
        "09:00", title="Quiet hours end (HH:MM); equal to the start: no quiet hours"
    )
    weekly_cap: int = Field(
        2, ge=1, le=50, title="Reminders a member gets at most in any rolling 7 days"
    )
    expiry_days: int = Field(
        30, ge=1, le=180, title="Remind of points expiring within this many days"
    )
    coupon_days: int = Field(
        7, ge=1, le=90, title="Remind of coupons issued in the last this many days"
    )
    otp_max_age_s: int = Field(
        600,
        ge=60,
        le=86400,
        title="A sign-in code not delivered this long after it was made is dropped",
        description="a late code only confuses: the member asks for a new one",
    )
    tries: int = Field(5, ge=1, le=20, title="Tries per message before it is recorded failed")
    first_wait_s: float = Field(60.0, gt=0, title="Wait after the first failed try (doubles)")
    max_wait_s: float = Field(3600.0, gt=0, title="Longest wait between tries")

    def make_sender(self) -> Sender | None:
        """The sender :attr:`sender` names (with the gateway's token and timeout); ``None``
        when none is set.

        Raises:
            ConfigError: ``sender_invalid``, or the gateway token's own errors.
        """
        if not self.sender:
            return None
        from hq.messages import sender_from_spec

        return sender_from_spec(
            self.sender, token_file=self.gateway_token_file, timeout_s=self.gateway_timeout_s
        )

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("a time of day is HH:MM (00:00-23:59)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _waits(self) -> MessageSettings:
        if self.max_wait_s < self.first_wait_s:
            raise ValueError("max_wait_s must be at least first_wait_s")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def quiet_hours(self) -> QuietHours:
        return QuietHours(_clock(self.quiet_start), _clock(self.quiet_end), self.tz)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.tries, self.first_wait_s, self.max_wait_s)


def _clock(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class QuietHours:
    """Hours of the chain's day when no reminder is sent (``start`` to ``end``, over midnight
    when ``end`` is earlier); ``start == end``: none."""

    start: time
    end: time
    tz: ZoneInfo

    def holds(self, moment: datetime) -> bool:
        if self.start == self.end:
            return False
        now = moment.astimezone(self.tz).time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_allowed(self, moment: datetime) -> datetime:
        """``moment`` itself outside quiet hours, else the moment they end (UTC)."""
        if not self.holds(moment):
            return moment
        local = moment.astimezone(self.tz)
        end = datetime.combine(local.date(), self.end, self.tz)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, self.tz)
        return end.astimezone(UTC)


# -- texts (members read Chinese; no name, no number, nothing beyond what the reminder is) --


def expiry_text(points: int, on: date) -> str:
    return (
        f"【会员中心】您有{points}积分将于{on.month}月{on.day}日到期，请及时使用。"
        f"{UNSUBSCRIBE_HINT}"
    )


def birthday_text() -> str:
    return f"【会员中心】生日月快乐！本月可到会员中心领取一份生日礼。{UNSUBSCRIBE_HINT}"


def coupon_text(title: str, until: date) -> str:
    name = " ".join(title.split())[:20]
    return (
        f"【会员中心】您获得一张优惠券「{name}」，{until.month}月{until.day}日前有效，"
        f"结账时出示会员码即可使用。{UNSUBSCRIBE_HINT}"
    )


# -- planning -------------------------------------------------------------------------------


@dataclass
class PlanReport:
    """What one planning run queued, by kind, and how many members it looked at."""

    members: int = 0
    queued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REMINDER_KINDS, 0))
    unreadable: int = 0  # members whose number could not be opened (logged by id)

    def as_dict(self) -> dict[str, object]:
        return {"members": self.members, "queued": dict(self.queued), "unreadable": self.unreadable}


@dataclass(frozen=True)
class _Wanted:
    kind: str
    subject: str  # what makes it once: the expiry date, the year, the coupon
    text: str


def dedupe_key(kind: str, member_id: str, subject: str) -> str:
    return f"{kind}:{member_id}:{subject}"


def _expiring(
    session: Session, member_ids: list[str], now: datetime, settings: MessageSettings
) -> dict[str, list[_Wanted]]:
    """Per member, 'N points expire on D' for each expiry date within ``expiry_days``.

    A lot is its credit entry (``lot_id``, ``expires_at``) less every entry debiting it (a
    redemption, an expiry) under the same ``lot_id``.
    """
    horizon = now + timedelta(days=settings.expiry_days)
    rows = session.execute(
        select(
            CentralEntry.member_id,
            CentralEntry.lot_id,
            func.sum(CentralEntry.points),
            func.max(CentralEntry.expires_at),
        )
        .where(CentralEntry.member_id.in_(member_ids), CentralEntry.lot_id.is_not(None))
        .group_by(CentralEntry.member_id, CentralEntry.lot_id)
    )
    by_day: dict[tuple[str, date], int] = defaultdict(int)
    for member_id, _lot, remaining, lapses in rows:
        if remaining is None or remaining <= 0 or lapses is None:
            continue
        expires_at = _utc(lapses)
        if now < expires_at <= horizon:
            by_day[(member_id, last_day(expires_at, settings.tz))] += int(remaining)
    out: dict[str, list[_Wanted]] = defaultdict(list)
    for (member_id, day), points in sorted(by_day.items()):
        out[member_id].append(_Wanted(POINTS_EXPIRY, day.isoformat(), expiry_text(points, day)))
    return out


def _coupons(
    session: Session, member_ids: list[str], now: datetime, settings: MessageSettings
) -> dict[str, list[_Wanted]]:
    """Per member, the coupons campaigns issued them lately that can still be used."""
    rows = session.execute(
        select(
            CampaignCoupon.member_id, CampaignCoupon.coupon_id, Campaign.title, Campaign.valid_until
        )
        .join(Campaign, Campaign.campaign_id == CampaignCoupon.campaign_id)
        .where(
            CampaignCoupon.member_id.in_(member_ids),
            CampaignCoupon.used_at.is_(None),
            CampaignCoupon.issued_at > now - timedelta(days=settings.coupon_days),
            Campaign.finished_at.is_(None),
            Campaign.valid_until > now,
        )
        .order_by(CampaignCoupon.issued_at, CampaignCoupon.coupon_id)
    )
    out: dict[str, list[_Wanted]] = defaultdict(list)
    for member_id, coupon_id, title, valid_until in rows:
        until = last_day(_utc(valid_until), settings.tz)
        out[member_id].append(_Wanted(COUPON, coupon_id, coupon_text(title, until)))
    return out


def plan_reminders(
    session_factory: Callable[[], Session],
    vault: PhoneVault,
    settings: MessageSettings,
    now: datetime,
    *,
    sender_name: str,
    progress: Callable[[int, int], None] | None = None,
) -> PlanReport:
    """Queues the reminders due to members with consent, once each; one transaction per
    chunk of members, so a large chain's run commits as it goes and can be run again."""
    report = PlanReport()
    quiet = settings.quiet_hours()
    due = quiet.next_allowed(now)
    local = now.astimezone(settings.tz)
    with session_factory() as session:
        member_ids = list(
            session.scalars(
                select(CentralMember.id)
                .where(
                    CentralMember.message_consent_version.is_not(None),
                    CentralMember.phone_enc.is_not(None),
                    CentralMember.deleted.is_(False),
                    CentralMember.merged_into.is_(None),
                )
                .order_by(CentralMember.id)
            )
        )
    total = len(member_ids)
    for start in range(0, total, _MEMBER_CHUNK):
        chunk = member_ids[start : start + _MEMBER_CHUNK]
        with session_factory() as session, session.begin():
            members = {
                m.id: m
                for m in session.scalars(select(CentralMember).where(CentralMember.id.in_(chunk)))
            }
            expiring = _expiring(session, chunk, now, settings)
            coupons = _coupons(session, chunk, now, settings)
            for member_id in chunk:
                member = members.get(member_id)
                if member is None or not may_message(member) or member.phone_enc is None:
                    continue
                wanted = list(expiring.get(member_id, ()))
                if member.birth_month == local.month:
                    wanted.append(_Wanted(BIRTHDAY, str(local.year), birthday_text()))
                wanted += coupons.get(member_id, ())
                if not wanted:
                    continue
                try:
                    phone = vault.decrypt(member.phone_enc)
                except KioskError:
                    report.unreadable += 1
                    continue
                for item in wanted:
                    queued = enqueue(
                        session,
                        vault,
                        kind=item.kind,
                        member_id=member_id,
                        phone=phone,
                        text=item.text,
                        sender=sender_name,
                        now=now,
                        due_at=due,
                        dedupe_key=dedupe_key(item.kind, member_id, item.subject),
                    )
                    if queued is not None:
                        report.queued[item.kind] += 1
        report.members += len(chunk)
        if progress is not None:
            progress(report.members, total)
    return report


# -- delivery -------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one delivery run did with the due messages."""

    sent: int = 0
    retrying: int = 0  # failed a try, waiting for the next
    failed: int = 0  # given up
    cancelled: int = 0  # consent withdrawn, or no longer worth sending
    held: int = 0  # moved to the end of quiet hours or until the weekly cap frees

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _claim(session: Session, now: datetime) -> HqMessage | None:
    """The next due message, locked for this transaction (other workers skip it)."""
    if session.get_bind().dialect.name == "sqlite":
        # Take SQLite's write lock first (waiting for it), so the row read below is still
        # queued when this transaction writes it.
        session.execute(text("UPDATE hq_message SET attempts = attempts WHERE 1 = 0"))
    return session.scalars(
        select(HqMessage)
        .where(HqMessage.status == QUEUED, HqMessage.due_at <= now)
        .order_by(HqMessage.due_at, HqMessage.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()


def _cancel(message: HqMessage, reason: str) -> None:
    message.status, message.phone_enc, message.last_error = CANCELLED, None, reason[:256]


def pointless(session: Session, message: HqMessage, now: datetime, tz: ZoneInfo) -> str | None:
    """Why a queued reminder is no longer worth sending, or None while it is."""
    kind, _, rest = (message.dedupe_key or "").partition(":")
    member_id, _, subject = rest.partition(":")
    if kind == POINTS_EXPIRY:
        try:
            day = date.fromisoformat(subject)
        except ValueError:
            return None
        if now.astimezone(tz).date() > day:
            return "dropped: the points have expired"
        still = _expiring_points_on(session, member_id, day, now, tz)
        return None if still > 0 else "dropped: the points were spent"
    if kind == BIRTHDAY:
        if subject != str(now.astimezone(tz).year):
            return "dropped: the birthday year is over"
        member = session.get(CentralMember, member_id)
        if member is None or member.birth_month != now.astimezone(tz).month:
            return "dropped: the birthday month is over"
        return None
    if kind == COUPON:
        found = session.execute(
            select(CampaignCoupon.used_at, Campaign.valid_until, Campaign.finished_at)
            .join(Campaign, Campaign.campaign_id == CampaignCoupon.campaign_id)
            .where(CampaignCoupon.coupon_id == subject)
        ).first()
        if found is None:
            return "dropped: the coupon is gone"
        used_at, valid_until, finished_at = found
        if used_at is not None:
            return "dropped: the coupon was used"
        if finished_at is not None or _utc(valid_until) <= now:
            return "dropped: the coupon's campaign has ended"
    return None


def _expiring_points_on(
    session: Session, member_id: str, day: date, now: datetime, tz: ZoneInfo
) -> int:
    rows = session.execute(
        select(func.sum(CentralEntry.points), func.max(CentralEntry.expires_at))
        .where(CentralEntry.member_id == member_id, CentralEntry.lot_id.is_not(None))
        .group_by(CentralEntry.lot_id)
    )
    return sum(
        int(points)
        for points, expires_at in rows
        if points
        and points > 0
        and expires_at is not None
        and _utc(expires_at) > now
        and last_day(_utc(expires_at), tz) == day
    )


def _cap_frees_at(session: Session, member_id: str, now: datetime, cap: int) -> datetime | None:
    """When the member may get another reminder, if the weekly cap holds it now."""
    sent = list(
        session.scalars(
            select(HqMessage.sent_at)
            .where(
                HqMessage.member_id == member_id,
                HqMessage.kind.in_(REMINDER_KINDS),
                HqMessage.status == SENT,
                HqMessage.sent_at > now - WEEK,
            )
            .order_by(HqMessage.sent_at.desc())
            .limit(cap)
        )
    )
    if len(sent) < cap:
        return None
    return _utc(min(t for t in sent if t is not None)) + WEEK


def _deliver_one(
    session: Session,
    vault: PhoneVault,
    message: HqMessage,
    sender: Sender,
    settings: MessageSettings,
    now: datetime,
    report: DeliveryReport,
) -> None:
    if message.kind == OTP and now - _utc(message.created_at) > timedelta(
        seconds=settings.otp_max_age_s
    ):
        _cancel(message, "dropped: the sign-in code is too old")
        report.cancelled += 1
        return
    if message.kind != OTP:
        member = session.get(CentralMember, message.member_id) if message.member_id else None
        if member is None or not may_message(member):
            _cancel(message, "cancelled: no consent to messages")
            report.cancelled += 1
            return
        reason = pointless(session, message, now, settings.tz)
        if reason is not None:
            _cancel(message, reason)
            report.cancelled += 1
            return
        allowed = settings.quiet_hours().next_allowed(now)
        if allowed > now:
            message.due_at = allowed
            report.held += 1
            return
        frees = _cap_frees_at(session, member.id, now, settings.weekly_cap)
        if frees is not None and frees > now:
            message.due_at = settings.quiet_hours().next_allowed(frees)
            report.held += 1
            return
    if message.phone_enc is None:
        message.status, message.last_error = FAILED, "no number to send to"
        report.failed += 1
        return
    try:
        vault.decrypt(message.phone_enc)
    except KioskError as exc:
        message.status, message.phone_enc, message.last_error = FAILED, None, exc.code
        report.failed += 1
        return
    if attempt(session, vault, message, sender, now, settings.retry_policy()):
        report.sent += 1
    elif message.status == FAILED:
        report.failed += 1
    else:
        report.retrying += 1


def deliver_due(
    engine: Engine,
    vault: PhoneVault,
    sender: Sender,
    settings: MessageSettings,
    clock: Callable[[], datetime],
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DeliveryReport:
    """Sends (or holds, or cancels) every queued message due now, each in its own
    transaction; ``limit`` stops after that many. Safe to run in several workers at once."""
    from sqlalchemy.orm import Session

    report = DeliveryReport()
    start = clock()
    with Session(engine) as session:
        total = (
            session.scalar(
                select(func.count())
                .select_from(HqMessage)
                .where(HqMessage.status == QUEUED, HqMessage.due_at <= start)
            )
            or 0
        )
    done = 0
    while limit is None or done < limit:
        with Session(engine) as session, session.begin():
            now = clock()
            message = _claim(session, now)
            if message is None:
                break
            _deliver_one(session, vault, message, sender, settings, now, report)
        done += 1
        if progress is not None:
            progress(min(done, total), total)
    return report


def messages(
    session: Session,
    *,
    member_id: str = "",
    status: str = "",
    limit: int = 200,
) -> list[HqMessage]:
    """The newest messages, of one member and in one status when asked."""
    query = select(HqMessage)
    if member_id:
        query = query.where(HqMessage.member_id == member_id)
    if status:
        query = query.where(HqMessage.status == status)
    return list(
        session.scalars(
            query.order_by(HqMessage.created_at.desc(), HqMessage.id.desc()).limit(limit)
        )
    )


def cancel_reminders(session: Session, member_id: str, reason: str) -> int:
    """Cancels the member's queued reminders (consent withdrawn); sign-in codes still go."""
    queued: Iterable[HqMessage] = session.scalars(
        select(HqMessage).where(
            HqMessage.member_id == member_id,
            HqMessage.status == QUEUED,
            HqMessage.kind != OTP,
        )
    )
    count = 0
    for message in queued:
        _cancel(message, reason)
        count += 1
    return count
