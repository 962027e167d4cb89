"""Members' replies to messages, posted by the SMS gateway: ``POST /sms/inbound``.

The gateway authenticates with a bearer token shared with HQ (``messages.inbound_token_file``
or the systemd credential ``sms-inbound-token``; neither: every reply is refused with 503).
The body is JSON ``{"from": "13812345678", "text": "TD"}``. An unsubscribe word ("TD", "退订",
"T", "STOP", "N", in any case or width) withdraws the consent to messages of the member found
by the number's lookup hash, through :func:`hq.contact.set_message_consent` (actor source
``sms``), and cancels their queued reminders; any other reply is recorded in HQ's audit and
changes nothing. The answer is JSON ``{"result": "unsubscribed" | "already" | "ignored" |
"unknown_number"}``; a bad body gets a 400 with a one-line error.
"""

from __future__ import annotations

import hmac
import json
import unicodedata
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from edge.domain.errors import ConfigError, InvalidInput
from edge.security.personal import mask_phone, normalize_phone
from hq.audit import Actor, record
from hq.contact import set_message_consent
from hq.feeds import find_member
from hq.models import CentralMember
from hq.reminders import cancel_reminders
from hq.sms import read_token
from hq.web.core import Console

__all__ = ["INBOUND_TOKEN_CREDENTIAL", "UNSUBSCRIBE_WORDS", "is_unsubscribe", "sms_routes"]

INBOUND_TOKEN_CREDENTIAL = "sms-inbound-token"
UNSUBSCRIBE_WORDS = frozenset({"TD", "退订", "T", "STOP", "N"})
MAX_BODY = 4096
_KEPT_TEXT = 160
_TRIM = " \t\r\n.。!！,，、~～"


def is_unsubscribe(reply: str) -> bool:
    """Whether a reply asks to stop messages: one of :data:`UNSUBSCRIBE_WORDS`, whatever its
    case or width ("ｔｄ", "Td。")."""
    word = unicodedata.normalize("NFKC", reply).strip(_TRIM).upper()
    return word in UNSUBSCRIBE_WORDS


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _payload(raw: bytes) -> tuple[str, str]:
    """(the sender's number, the reply's text) from the gateway's JSON.

    Raises:
        InvalidInput: the body is not the JSON object the contract says.
    """
    try:
        body: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the body is not JSON", code="bad_payload") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body is not a JSON object", code="bad_payload")
    sender, reply = body.get("from"), body.get("text")
    if not isinstance(sender, str) or not isinstance(reply, str):
        raise InvalidInput('"from" and "text" must both be strings', code="bad_payload")
    return normalize_phone(sender), reply


def sms_routes(console: Console) -> list[BaseRoute]:
    """The gateway's door into HQ (no console session: its own token)."""
    tokens: dict[str, str] = {}

    def token() -> str:
        if "value" not in tokens:  # read once, on the first reply
            tokens["value"] = read_token(
                console.config.messages.inbound_token_file, INBOUND_TOKEN_CREDENTIAL
            )
        return tokens["value"]

    async def inbound(request: Request) -> Response:
        try:
            expected = token()
        except ConfigError as exc:
            return _error(503, f"replies are not taken: {exc.message}")
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {expected}".encode()):
            return _error(401, "a valid bearer token is needed")
        if console.phone_lookup is None:
            return _error(503, "replies are not taken: the chain's phone lookup key is missing")
        raw = b""
        async for chunk in request.stream():  # never more than MAX_BODY kept in memory
            raw += chunk
            if len(raw) > MAX_BODY:
                return _error(400, f"the body is larger than {MAX_BODY} bytes")
        try:
            phone, reply = _payload(raw)
        except InvalidInput as exc:
            return _error(400, exc.message)
        result = await run_in_threadpool(_apply, console, phone, reply)
        return JSONResponse({"result": result})

    return [Route("/sms/inbound", inbound, methods=["POST"])]


def _apply(console: Console, phone: str, reply: str) -> str:
    lookup = console.phone_lookup
    assert lookup is not None
    masked = mask_phone(phone)
    actor = Actor(masked, "sms")
    now = console.clock()
    with console.tx() as session:
        member_id = find_member(session, phone_hash=lookup(phone))
        member = session.get(CentralMember, member_id) if member_id else None
        if member is not None and is_unsubscribe(reply):
            if not set_message_consent(session, member, None, now=now, actor=actor):
                return "already"
            cancel_reminders(session, member.id, "cancelled: unsubscribed by reply")
            return "unsubscribed"
        record(
            session,
            actor,
            "sms.reply",
            member.id if member is not None else masked,
            now,
            after={"from": masked, "text": reply[:_KEPT_TEXT]},
            store_id=member.store_id if member is not None else "",
        )
        return "ignored" if member is not None else "unknown_number"
