"""HQ staff's console accounts: roles, passwords, lockout and signed-in sessions.

Passwords are hashed with scrypt (memory-hard: 32 MiB and about a tenth of a second per
guess here), salted, with the parameters in the stored string. Five wrong passwords in a row
lock an account for 15 minutes; an administrator can unlock it sooner. A session is a random
token in an HttpOnly cookie; HQ keeps only its SHA-256, with the session's CSRF token, and a
new session (new token) is made at every sign-in, so a token planted before sign-in is
worthless after it. Every change to an account goes through :func:`hq.audit.record`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound, Refusal
from hq.audit import Actor, record
from hq.models import WebAccount, WebSession

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
MIN_PASSWORD = 10
MAX_PASSWORD = 256
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
SESSION_IDLE = timedelta(hours=8)
SESSION_MAX = timedelta(hours=12)


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    MEMBER_DESK = "member_desk"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Permission(StrEnum):
    """What a role may change; every role may look at every page."""

    ALERTS = "alerts"  # acknowledge alerts
    FLEET = "fleet"  # enrol, move, replace and revoke devices
    CATALOGUE = "catalogue"  # the catalogue and the rules
    MEMBERS = "members"  # the members desk: block cards, small adjustments
    APPROVE = "approve"  # large adjustments, merges, settling overdrafts
    UPDATES = "updates"  # upload bundles and roll them out
    ACCOUNTS = "accounts"  # console accounts


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(),
    Role.OPERATOR: frozenset({Permission.ALERTS, Permission.FLEET, Permission.CATALOGUE}),
    Role.MEMBER_DESK: frozenset({Permission.ALERTS, Permission.MEMBERS}),
    Role.SUPERVISOR: frozenset(set(Permission) - {Permission.ACCOUNTS}),
    Role.ADMIN: frozenset(Permission),
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower().replace(" ", "_").replace("-", "_"))
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"'{text}' is not a role (one of {roles})", code="bad_role") from None


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        raise InvalidInput(
            "An account name is 2 to 64 characters: lower-case letters, digits, _ . -",
            code="bad_account_name",
        )
    return name


def check_password(password: str, name: str = "") -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(
            f"A password is {MIN_PASSWORD} to {MAX_PASSWORD} characters.", code="weak_password"
        )
    if len(set(password)) < 4 or (name and name.lower() in password.lower()):
        raise InvalidInput(
            "That password is too easy to guess (repeated characters or the account name).",
            code="weak_password",
        )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=2 * 128 * SCRYPT_R * SCRYPT_N,
        dklen=32,
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed hash matches nothing."""
    try:
        scheme, n_s, r_s, p_s, salt_s, digest_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, digest = base64.b64decode(salt_s), base64.b64decode(digest_s)
    except (ValueError, binascii.Error):
        return False
    if scheme != "scrypt" or not (1 < n <= _MAX_N and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    try:
        got = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n, dklen=len(digest)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, digest)


@functools.cache
def _decoy() -> str:
    """A hash of a random password, checked when the account does not exist, so that a wrong
    name costs the same time as a wrong password (made on first use: every ``kiosk`` command
    imports this module)."""
    return hash_password(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class AccountRow:
    name: str
    display_name: str
    role: Role
    active: bool
    locked_until: datetime | None
    failures: int
    created_at: datetime

    def can(self, permission: Permission) -> bool:
        return self.active and permission in GRANTS[self.role]


def _row(a: WebAccount) -> AccountRow:
    return AccountRow(
        a.name, a.display_name, Role(a.role), a.active, a.locked_until, a.failures, a.created_at
    )


def _public(a: WebAccount) -> dict[str, object]:
    return {"display_name": a.display_name, "role": a.role, "active": a.active}


def _get(session: Session, name: str, lock: bool = False) -> WebAccount:
    query = select(WebAccount).where(WebAccount.name == name.strip().lower())
    account = session.scalar(query.with_for_update() if lock else query)
    if account is None:
        raise NotFound(f"no console account '{name}'", code="no_account")
    return account


def accounts(session: Session) -> list[AccountRow]:
    return [_row(a) for a in session.scalars(select(WebAccount).order_by(WebAccount.name))]


def account(session: Session, name: str) -> AccountRow:
    return _row(_get(session, name))


def create_account(
    session: Session,
    name: str,
    display_name: str,
    role: Role,
    password: str,
    actor: Actor,
    now: datetime,
) -> AccountRow:
    name = check_name(name)
    display_name = " ".join(display_name.split())[:64] or name
    check_password(password, name)
    if session.get(WebAccount, name) is not None:
        raise Refusal(f"there is already an account '{name}'", code="account_exists")
    a = WebAccount(
        name=name,
        display_name=display_name,
        role=role.value,
        password_hash=hash_password(password),
        active=True,
        failures=0,
        locked_until=None,
        created_at=now,
        password_changed_at=now,
    )
    session.add(a)
    record(session, actor, "account.create", name, now, after=_public(a))
    return _row(a)


def change_account(
    session: Session,
    name: str,
    actor: Actor,
    now: datetime,
    *,
    role: Role | None = None,
    active: bool | None = None,
    display_name: str | None = None,
) -> AccountRow:
    a = _get(session, name, lock=True)
    before = _public(a)
    if actor.name == a.name and actor.source == "web" and (role or active is False):
        raise Refusal("you cannot change your own role or disable yourself", code="own_account")
    if role is not None:
        a.role = role.value
    if active is not None:
        a.active = active
        if not active:  # signed out everywhere at once
            session.execute(delete(WebSession).where(WebSession.account == a.name))
    if display_name is not None:
        a.display_name = " ".join(display_name.split())[:64] or a.name
    if _public(a) != before:
        record(session, actor, "account.change", a.name, now, before=before, after=_public(a))
    return _row(a)


def set_password(
    session: Session, name: str, password: str, actor: Actor, now: datetime
) -> AccountRow:
    a = _get(session, name, lock=True)
    check_password(password, a.name)
    a.password_hash = hash_password(password)
    a.password_changed_at = now
    a.failures = 0
    a.locked_until = None
    session.execute(delete(WebSession).where(WebSession.account == a.name))
    record(session, actor, "account.password", a.name, now)
    return _row(a)


def unlock(session: Session, name: str, actor: Actor, now: datetime) -> AccountRow:
    a = _get(session, name, lock=True)
    before = {"failures": a.failures, "locked_until": a.locked_until}
    a.failures = 0
    a.locked_until = None
    record(session, actor, "account.unlock", a.name, now, before=before, after={"failures": 0})
    return _row(a)


class SignInRefused(Refusal):
    code = "sign_in_refused"


def authenticate(
    session: Session, name: str, password: str, now: datetime, address: str = ""
) -> AccountRow:
    """The account when ``password`` is right and it is neither disabled nor locked.

    A wrong password counts towards the lockout; the fifth in a row locks the account for
    :data:`LOCKOUT`. Whatever is wrong, the refusal says only what the person may know: a
    wrong name or password (never which), or that the account is locked until when."""
    try:
        a = _get(session, name, lock=True)
    except NotFound:
        verify_password(password, _decoy())
        raise SignInRefused("wrong account name or password", code="bad_credentials") from None
    if a.locked_until is not None and a.locked_until > now:
        raise SignInRefused(
            f"this account is locked until {a.locked_until:%H:%M} UTC after "
            f"{MAX_FAILURES} wrong passwords",
            code="locked",
            until=a.locked_until.isoformat(),
        )
    if not verify_password(password, a.password_hash) or not a.active:
        if a.active:
            a.failures += 1
            if a.failures >= MAX_FAILURES:
                a.locked_until = now + LOCKOUT
                a.failures = 0
                record(
                    session,
                    Actor(a.name, "web"),
                    "account.locked",
                    a.name,
                    now,
                    after={"locked_until": a.locked_until.isoformat(), "address": address},
                )
        raise SignInRefused("wrong account name or password", code="bad_credentials")
    a.failures = 0
    a.locked_until = None
    return _row(a)


@dataclass(frozen=True)
class SignedIn:
    token: str  # for the cookie; HQ keeps only its hash
    csrf: str
    account: AccountRow


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(
    session: Session, name: str, password: str, now: datetime, address: str = ""
) -> SignedIn:
    """Check the password and open a new session (always a new token)."""
    row = authenticate(session, name, password, now, address)
    purge_sessions(session, now)  # sessions left to expire are cleared as others begin
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_token_hash(token),
            account=row.name,
            csrf=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_MAX,
            address=address[:64],
        )
    )
    record(session, Actor(row.name, "web"), "sign_in", row.name, now, after={"address": address})
    return SignedIn(token, csrf, row)


@dataclass(frozen=True)
class CurrentSession:
    token_hash: str
    csrf: str
    account: AccountRow


def current(session: Session, token: str, now: datetime) -> CurrentSession | None:
    """The signed-in session of a cookie's token, when it is live (and touch it)."""
    if not token or len(token) > 128:
        return None
    s = session.get(WebSession, _token_hash(token))
    if s is None:
        return None
    if s.expires_at <= now or s.last_seen_at + SESSION_IDLE <= now:
        session.delete(s)
        return None
    a = session.get(WebAccount, s.account)
    if a is None or not a.active:
        session.delete(s)
        return None
    if now - s.last_seen_at > timedelta(minutes=1):
        s.last_seen_at = now
    return CurrentSession(s.token_hash, s.csrf, _row(a))


def sign_out(session: Session, token: str, now: datetime) -> None:
    s = session.get(WebSession, _token_hash(token))
    if s is not None:
        record(session, Actor(s.account, "web"), "sign_out", s.account, now)
        session.delete(s)


def purge_sessions(session: Session, now: datetime) -> int:
    result = session.execute(
        delete(WebSession).where(
            (WebSession.expires_at <= now) | (WebSession.last_seen_at <= now - SESSION_IDLE)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
