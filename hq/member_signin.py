"""A member signs in on the member page with their phone number and a one-time code sent to it.

Only members are sent a code: a number HQ does not know (by its lookup hash, as the kiosks
register it) is told to register at the member center and nothing is sent. Codes are kept
hashed, expire after :data:`CODE_TTL` and are used once; a new code ends the ones before it.

Rate limits live in the database, so every web worker counts the same requests: per number
one code every :data:`NUMBER_GAP` and :data:`NUMBER_PER_HOUR` an hour, per client address
:data:`ADDRESS_PER_HOUR` an hour (numbers that are not members count there too). After
:data:`MAX_WRONG` wrong codes in a row a number is locked for :data:`LOCKOUT`.

A refusal that must be remembered (a wrong code counts towards the lockout) is returned as a
:class:`Refused` rather than raised, so the caller commits it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update

from edge.domain.errors import InvalidInput
from edge.domain.ids import IdFactory
from edge.security.personal import mask_phone, normalize_phone
from hq.audit import Actor, record
from hq.bulk import insert_new
from hq.feeds import find_member
from hq.messages import CANCELLED, QUEUED, Sender, attempt, enqueue
from hq.models import CentralMember, MemberOtp, MemberSession, MemberSignIn, MemberSignInRequest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from edge.security.personal import PhoneVault

__all__ = [
    "ADDRESS_PER_HOUR",
    "CODE_TTL",
    "LOCKOUT",
    "MAX_WRONG",
    "NUMBER_GAP",
    "NUMBER_PER_HOUR",
    "SESSION_TTL",
    "CodeSent",
    "MemberSignedIn",
    "NotAMember",
    "Refused",
    "current",
    "request_code",
    "sign_in",
    "sign_out",
]

CODE_TTL = timedelta(minutes=5)
NUMBER_GAP = timedelta(minutes=1)
NUMBER_PER_HOUR = 5
ADDRESS_PER_HOUR = 20
MAX_WRONG = 5
LOCKOUT = timedelta(minutes=30)
SESSION_TTL = timedelta(days=30)
SESSION_IDLE = timedelta(days=7)
HOUR = timedelta(hours=1)
_ids = IdFactory()


@dataclass(frozen=True)
class Refused:
    """Why a request was refused, in one line, with a stable code and its figures."""

    code: str
    message: str
    details: dict[str, object] = field(default_factory=dict)  # the figures in ``message``


@dataclass(frozen=True)
class CodeSent:
    """A code went (or is queued) to the member's phone; ``delivered`` says whether the
    sender took it."""

    phone_masked: str
    delivered: bool
    expires_at: datetime


@dataclass(frozen=True)
class NotAMember:
    """The number is no member's: nothing was sent."""

    phone_masked: str


@dataclass(frozen=True)
class MemberSignedIn:
    token: str  # for the cookie; HQ keeps only its hash
    csrf: str
    member_id: str


@dataclass(frozen=True)
class CurrentMember:
    member_id: str
    csrf: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _code_hash(otp_id: str, code: str) -> str:
    return _digest(f"{otp_id}:{code}")


def _phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except InvalidInput:
        raise InvalidInput(
            "type an 11-digit mobile number (such as 138 0013 8000)", code="bad_phone"
        ) from None


def _wait_text(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    return f"{seconds} s" if seconds < 120 else f"{(seconds + 59) // 60} min"


def _state(session: Session, phone_hash: str, lock: bool = False) -> MemberSignIn:
    """The number's sign-in row (made on first use), locked for this transaction when asked
    (so two workers counting one number's requests take turns)."""
    # Made with ON CONFLICT DO NOTHING: two workers asking for one new number at once both
    # go on with the one row.
    insert_new(
        session.connection(),
        MemberSignIn,
        {"phone_hash": phone_hash, "failures": 0, "locked_until": None},
        ["phone_hash"],
    )
    query = select(MemberSignIn).where(MemberSignIn.phone_hash == phone_hash)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query.execution_options(populate_existing=True))
    assert row is not None
    return row


def _locked(row: MemberSignIn, now: datetime) -> Refused | None:
    if row.locked_until is None or row.locked_until <= now:
        return None
    return Refused(
        "locked",
        f"too many wrong codes: this number can sign in again at {row.locked_until:%H:%M} UTC",
        {"until": f"{row.locked_until:%H:%M} UTC"},
    )


def request_code(
    session: Session,
    vault: PhoneVault,
    sender: Sender,
    raw_phone: str,
    address: str,
    now: datetime,
) -> CodeSent | NotAMember | Refused:
    """Sends a sign-in code to a member's number, within the rate limits.

    Raises:
        InvalidInput: ``bad_phone`` when the text is not a mobile number.
    """
    phone = _phone(raw_phone)
    address = address[:64]
    phone_hash = vault.lookup_hash(phone)
    from_address = session.scalar(
        select(func.count())
        .select_from(MemberSignInRequest)
        .where(MemberSignInRequest.address == address, MemberSignInRequest.at > now - HOUR)
    )
    if (from_address or 0) >= ADDRESS_PER_HOUR:
        first = session.scalar(
            select(MemberSignInRequest.at)
            .where(MemberSignInRequest.address == address, MemberSignInRequest.at > now - HOUR)
            .order_by(MemberSignInRequest.at.desc())
            .offset(ADDRESS_PER_HOUR - 1)
            .limit(1)
        )
        wait = (first + HOUR - now).total_seconds() if first else HOUR.total_seconds()
        return Refused(
            "address_limit",
            f"too many sign-in codes asked for from this network: try again in {_wait_text(wait)}",
            {"wait": _wait_text(wait)},
        )
    state = _state(session, phone_hash, lock=True)
    locked = _locked(state, now)
    if locked is not None:
        return locked
    asked = list(
        session.scalars(
            select(MemberSignInRequest.at)
            .where(
                MemberSignInRequest.phone_hash == phone_hash, MemberSignInRequest.at > now - HOUR
            )
            .order_by(MemberSignInRequest.at.desc())
        )
    )
    if asked and asked[0] > now - NUMBER_GAP:
        wait = (asked[0] + NUMBER_GAP - now).total_seconds()
        return Refused(
            "too_soon",
            f"a code was sent to this number a moment ago: ask again in {_wait_text(wait)}",
            {"wait": _wait_text(wait)},
        )
    if len(asked) >= NUMBER_PER_HOUR:
        wait = (asked[NUMBER_PER_HOUR - 1] + HOUR - now).total_seconds()
        return Refused(
            "number_limit",
            f"{NUMBER_PER_HOUR} codes an hour at most for one number: "
            f"try again in {_wait_text(wait)}",
            {"wait": _wait_text(wait)},
        )
    # What the limits no longer count goes (by the indexes the counting uses).
    for column, value in (
        (MemberSignInRequest.phone_hash, phone_hash),
        (MemberSignInRequest.address, address),
    ):
        session.execute(
            delete(MemberSignInRequest).where(column == value, MemberSignInRequest.at <= now - HOUR)
        )
    session.execute(
        delete(MemberOtp).where(MemberOtp.phone_hash == phone_hash, MemberOtp.expires_at <= now)
    )
    session.add(MemberSignInRequest(phone_hash=phone_hash, address=address, at=now))
    member_id = find_member(session, phone_hash=phone_hash)
    member = session.get(CentralMember, member_id) if member_id is not None else None
    if member is None or member.deleted:
        session.flush()
        return NotAMember(mask_phone(phone))
    # Only the newest code signs in.
    session.execute(
        update(MemberOtp)
        .where(MemberOtp.phone_hash == phone_hash, MemberOtp.used_at.is_(None))
        .values(used_at=now)
    )
    otp_id = _ids.new()
    code = f"{secrets.randbelow(10**6):06d}"
    expires_at = now + CODE_TTL
    session.add(
        MemberOtp(
            id=otp_id,
            phone_hash=phone_hash,
            member_id=member.id,
            code_hash=_code_hash(otp_id, code),
            created_at=now,
            expires_at=expires_at,
            used_at=None,
        )
    )
    text = (
        f"【会员中心】登录验证码 {code}，{int(CODE_TTL.total_seconds() // 60)} 分钟内有效，"
        f"请勿告诉他人。Sign-in code {code}"
    )
    message = enqueue(
        session,
        vault,
        kind="otp",
        member_id=member.id,
        phone=phone,
        text=text,
        sender=sender.name,
        now=now,
    )
    assert message is not None  # no dedupe key: always queued
    delivered = attempt(session, vault, message, sender, now)
    if not delivered and message.status == QUEUED:
        # A code is asked for again, never retried later: it would arrive stale or late.
        message.status, message.phone_enc = CANCELLED, None
    # The record keeps what was sent but not the code itself (which is kept only hashed).
    message.body = text.replace(code, "*" * len(code))
    session.flush()
    return CodeSent(mask_phone(phone), delivered, expires_at)


def sign_in(
    session: Session,
    lookup: Callable[[str], str],
    raw_phone: str,
    code: str,
    address: str,
    now: datetime,
) -> MemberSignedIn | Refused:
    """Checks a sign-in code and opens a member session; a wrong code counts towards the
    number's lockout (commit the transaction either way).

    Raises:
        InvalidInput: ``bad_phone``, or ``bad_code`` when the code is not 6 digits.
    """
    phone = _phone(raw_phone)
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        raise InvalidInput("the code is the 6 digits in the message", code="bad_code")
    phone_hash = lookup(phone)
    state = _state(session, phone_hash, lock=True)
    locked = _locked(state, now)
    if locked is not None:
        return locked
    otp = session.scalar(
        select(MemberOtp)
        .where(MemberOtp.phone_hash == phone_hash, MemberOtp.used_at.is_(None))
        .order_by(MemberOtp.created_at.desc())
        .limit(1)
    )
    if otp is None or otp.expires_at <= now:
        return Refused("no_code", "this code has expired or was used: ask for a new one")
    if not hmac.compare_digest(otp.code_hash, _code_hash(otp.id, code)):
        state.failures += 1
        if state.failures >= MAX_WRONG:
            state.failures, state.locked_until = 0, now + LOCKOUT
            otp.used_at = now  # the code that was being guessed is gone too
            record(
                session,
                Actor(mask_phone(phone), "member"),
                "member.sign_in_locked",
                otp.member_id,
                now,
                after={"until": state.locked_until.isoformat()},
            )
            return Refused(
                "locked",
                f"{MAX_WRONG} wrong codes: this number can sign in again at "
                f"{state.locked_until:%H:%M} UTC",
                {"until": f"{state.locked_until:%H:%M} UTC"},
            )
        left = MAX_WRONG - state.failures
        return Refused(
            "wrong_code",
            f"wrong code: {left} more tries before this number is locked for "
            f"{int(LOCKOUT.total_seconds() // 60)} minutes",
            {"left": left},
        )
    otp.used_at = now
    state.failures, state.locked_until = 0, None
    session.execute(delete(MemberSession).where(MemberSession.expires_at <= now))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    session.add(
        MemberSession(
            token_hash=_digest(token),
            member_id=otp.member_id,
            csrf=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_TTL,
            address=address[:64],
        )
    )
    record(session, Actor(mask_phone(phone), "member"), "member.sign_in", otp.member_id, now)
    session.flush()
    return MemberSignedIn(token, csrf, otp.member_id)


def current(session: Session, token: str, now: datetime) -> CurrentMember | None:
    """The member a session cookie's token names, when the session is live (and touch it)."""
    if not token or len(token) > 128:
        return None
    row = session.get(MemberSession, _digest(token))
    if row is None or row.expires_at <= now or row.last_seen_at + SESSION_IDLE <= now:
        return None
    member = session.get(CentralMember, row.member_id)
    if member is None or member.deleted:
        return None
    row.last_seen_at = now
    # A member merged into another since signing in sees the member they became.
    return CurrentMember(member.merged_into or member.id, row.csrf)


def sign_out(session: Session, token: str) -> None:
    session.execute(delete(MemberSession).where(MemberSession.token_hash == _digest(token)))
