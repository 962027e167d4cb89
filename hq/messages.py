"""Messages to members' phones: the sender interface, and every message kept with its result.

A message is queued in HQ's database (:func:`enqueue`) in the transaction that decides to send
it, then tried (:func:`attempt`): a sender that fails is tried again later, with backoff, up
to the policy's number of tries, and then the message is recorded as failed. Nothing is lost
between deciding and sending, and nothing is sent twice for one reminder (``dedupe_key``).

The number to send to is kept sealed with HQ's data key (``phone_enc``) only while the message
waits; once sent or given up only its masked form stays, with what was sent, when, and how it
ended.

Senders: :class:`FileSender` writes each message as a JSON line to a file (development and
tests read sign-in codes from it); :class:`hq.sms.HttpSmsSender` posts to an SMS gateway.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge.domain.errors import ConfigError
from edge.domain.ids import IdFactory
from edge.security.personal import mask_phone
from hq.models import HqMessage

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from edge.security.personal import PhoneVault

__all__ = [
    "CANCELLED",
    "FAILED",
    "QUEUED",
    "SENT",
    "FileSender",
    "RetryPolicy",
    "SendFailed",
    "Sender",
    "attempt",
    "enqueue",
    "sender_from_spec",
]

QUEUED, SENT, FAILED, CANCELLED = "queued", "sent", "failed", "cancelled"
_ERROR_CHARS = 256
_ids = IdFactory()


class SendFailed(Exception):
    """The sender could not deliver; ``retryable`` False means trying again cannot help (a
    number the gateway refuses), True that a later try may (a timeout, a 5xx)."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


class Sender(Protocol):
    """Delivers one text message to one phone number."""

    name: str

    def send(self, to: str, text: str) -> str:
        """Delivers ``text`` to ``to`` (11 digits) and returns the provider's reference.

        Raises:
            SendFailed: not delivered (``retryable`` says whether a later try may help).
        """
        ...


class FileSender:
    """Writes each message as one JSON line ``{"to", "text", "ref"}`` to a file: the sender for
    development and tests (a sign-in code is read back from it)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, to: str, text: str) -> str:
        ref = _ids.new()
        line = json.dumps({"to": to, "text": text, "ref": ref}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        return ref

    def sent(self) -> list[dict[str, str]]:
        """Every message written so far, oldest first."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a message is tried and how long to wait between tries (doubling)."""

    tries: int = 5
    first_wait_s: float = 60.0
    max_wait_s: float = 3600.0

    def wait_after(self, attempts: int) -> timedelta:
        """The wait before the next try, after ``attempts`` failed ones (at least one)."""
        return timedelta(seconds=min(self.first_wait_s * 2 ** (attempts - 1), self.max_wait_s))


def enqueue(
    session: Session,
    vault: PhoneVault,
    *,
    kind: str,
    member_id: str | None,
    phone: str,
    text: str,
    sender: str,
    now: datetime,
    due_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> HqMessage | None:
    """Queues a message in the caller's transaction; ``None`` when one with ``dedupe_key``
    exists already (that reminder was decided before).

    Raises:
        InvalidInput: ``bad_phone`` when ``phone`` is not a mobile number.
    """
    if dedupe_key is not None and (
        session.query(HqMessage.id).filter_by(dedupe_key=dedupe_key).first() is not None
    ):
        return None
    message = HqMessage(
        id=_ids.new(),
        member_id=member_id,
        kind=kind,
        phone_masked=mask_phone(phone),
        phone_enc=vault.encrypt(phone),
        body=text,
        dedupe_key=dedupe_key,
        created_at=now,
        due_at=due_at or now,
        status=QUEUED,
        attempts=0,
        sender=sender,
    )
    session.add(message)
    session.flush()
    return message


def attempt(
    session: Session,
    vault: PhoneVault,
    message: HqMessage,
    sender: Sender,
    now: datetime,
    policy: RetryPolicy | None = None,
) -> bool:
    """Tries a queued message once and records how it went; True when it was delivered.

    A retryable failure waits per ``policy`` and stays queued until its last try, then it is
    failed; a failure that cannot be retried fails at once. Sent or failed, the number itself
    is forgotten (only the masked form stays).
    """
    policy = policy or RetryPolicy()
    if message.status != QUEUED or message.phone_enc is None:
        return False
    message.attempts += 1
    try:
        ref = sender.send(vault.decrypt(message.phone_enc), message.body)
    except SendFailed as exc:
        message.last_error = str(exc)[:_ERROR_CHARS]
        if exc.retryable and message.attempts < policy.tries:
            message.due_at = now + policy.wait_after(message.attempts)
        else:
            message.status, message.phone_enc = FAILED, None
        return False
    message.status, message.sent_at, message.phone_enc = SENT, now, None
    message.provider_ref, message.sender = ref[:64], sender.name
    return True


def sender_from_spec(spec: str, *, token_file: str = "", timeout_s: float = 10.0) -> Sender:
    """The sender a setting names: ``file:PATH`` (development: :class:`FileSender`) or
    ``http:URL`` (an SMS gateway: :class:`hq.sms.HttpSmsSender`, its bearer token from
    ``token_file`` or the systemd credential ``sms-gateway-token``).

    Raises:
        ConfigError: ``sender_invalid`` for a setting naming no known sender; the token's
            own errors (``token_missing``, ``token_unreadable``, ``token_invalid``).
    """
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest:
        return FileSender(Path(rest))
    if kind == "http" and rest:
        from hq.sms import GATEWAY_TOKEN_CREDENTIAL, HttpSmsSender, check_gateway_url, read_token

        url = check_gateway_url(rest)
        return HttpSmsSender(
            url, read_token(token_file, GATEWAY_TOKEN_CREDENTIAL), timeout_s=timeout_s
        )
    raise ConfigError(
        f"unknown message sender {spec!r} (expected file:PATH or http:URL)",
        code="sender_invalid",
    )
