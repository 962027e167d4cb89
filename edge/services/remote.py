"""Members this kiosk does not hold, fetched from HQ through the local sync agent; and gift
vouchers another kiosk printed, checked with HQ the same way.

A kiosk holds its own store's members. When a card, a member code or a phone number it does
not know is met (a member of another store shopping here), the service asks the sync agent,
over a Unix socket in the data directory, to fetch the member from HQ; the agent applies
HQ's snapshot to the ledger and answers, and the service reads the member as if they had
always been here. Without an agent, or with HQ out of reach, the answer is ``offline`` and
the kiosk refuses as it would have, saying HQ could not be asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from datetime import date
from enum import StrEnum
from pathlib import Path

from sqlalchemy import func, select

from edge.app import AppContext
from edge.domain.cards import parse_card_number
from edge.domain.errors import KioskError, NotFound
from edge.protocol import CouponAnswer, VoucherCheckResult, months_before
from edge.security.personal import normalize_phone
from edge.storage.models import Card, LedgerEntry, Member

log = logging.getLogger(__name__)

FETCH_SOCKET = "agent.sock"
MAX_LINE = 4096
MAX_WALLET_LINE = 512 * 1024  # a wallet of 200 coupons, each with its code and terms
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes


def fetch_socket_path(app: AppContext) -> Path:
    """``<data dir>/agent.sock``, or one named after the data directory in the temporary
    directory when that path is too long for a Unix socket."""
    path = app.data_dir / FETCH_SOCKET
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(app.data_dir.resolve())).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"mck-{digest}.sock"


class Fetched(StrEnum):
    FOUND = "found"  # the member is here now
    UNKNOWN = "unknown"  # HQ has no such member
    OFFLINE = "offline"  # no agent, or HQ did not answer in time


def fetch_member(
    app: AppContext, card_no: str | None = None, phone_hash: str | None = None
) -> Fetched:
    """Asks the agent to fetch a member by card number or phone hash (exactly one)."""
    path = fetch_socket_path(app)
    if not app.config.sync.enabled or not path.exists():
        return Fetched.OFFLINE
    request = json.dumps({"card_no": card_no, "phone_hash": phone_hash}).encode() + b"\n"
    timeout = app.config.sync.fetch_timeout_s
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout + 0.5)
            conn.connect(str(path))
            conn.sendall(request)
            answer = conn.makefile("rb").readline(MAX_LINE)
    except OSError as exc:
        log.info("the sync agent could not be asked for a member: %s", exc)
        return Fetched.OFFLINE
    try:
        return Fetched(json.loads(answer)["result"])
    except (ValueError, KeyError, TypeError):
        log.warning("the sync agent answered a member fetch with %r", answer[:200])
        return Fetched.OFFLINE


def _ask_agent(
    app: AppContext, request: dict[str, object], what: str, max_line: int = MAX_LINE
) -> dict[str, object] | None:
    """One line to the agent and its one-line answer (None: no agent, or no answer)."""
    path = fetch_socket_path(app)
    if not app.config.sync.enabled or not path.exists():
        return None
    line = json.dumps(request).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(app.config.sync.fetch_timeout_s + 0.5)
            conn.connect(str(path))
            conn.sendall(line)
            answer = conn.makefile("rb").readline(max_line)
    except OSError as exc:
        log.info("the sync agent could not be asked %s: %s", what, exc)
        return None
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        log.warning("the sync agent answered %s with %r", what, answer[:200])
        return None
    return parsed


def check_voucher_with_hq(
    app: AppContext,
    issuer_device_id: str,
    voucher_id: str,
    claim: bool,
    today: date,
    code: str = "",
) -> VoucherCheckResult | None:
    """Asks HQ, through the agent, about a gift voucher (claiming it for collection here
    when ``claim``; HQ checks ``code``'s signature with the printing kiosk's key); None when
    there is no agent or HQ did not answer in time."""
    asked: dict[str, object] = {
        "voucher": {
            "issuer_device_id": issuer_device_id,
            "voucher_id": voucher_id,
            "claim": claim,
            "today": today.isoformat(),
            "code": code,
        }
    }
    parsed = _ask_agent(app, asked, "about a voucher")
    if parsed is None or parsed.get("result") != "answered":
        return None
    try:
        return VoucherCheckResult.model_validate(parsed.get("answer"))
    except ValueError:
        log.warning("the sync agent passed on an answer about a voucher that does not read")
        return None


def ask_hq_about_coupons(app: AppContext, asked: dict[str, object]) -> CouponAnswer | None:
    """Asks HQ, through the agent, for a member's wallet (``{"action": "wallet",
    "member_id": ...}``) or to check or use a coupon (``{"action": "use", "coupon_id": ...,
    "ref": ...}``); None when there is no agent or HQ did not answer in time."""
    parsed = _ask_agent(app, {"coupon": asked}, "about coupons", MAX_WALLET_LINE)
    if parsed is None or parsed.get("result") != "answered":
        return None
    try:
        return CouponAnswer.model_validate(parsed.get("answer"))
    except ValueError:
        log.warning("the sync agent passed on an answer about coupons that does not read")
        return None


class Holding(StrEnum):
    HELD = "held"  # here, and kept current by HQ
    STALE = "stale"  # of another store, not seen here for sync.hold_months
    ABSENT = "absent"


def holding(app: AppContext, card_no: str | None, phone_hash: str | None) -> Holding:
    """Whether this kiosk holds the member of a card or phone hash.

    Members of this store are held for good. One of another store is held while seen here:
    their points moved here, or this store fetched them, within ``sync.hold_months``. After
    that HQ stops sending their changes here (a while later: see
    :func:`hq.feeds.release_unseen`), so what is here may be out of date: fetch them again.
    """
    with app.db.read_connection() as conn:
        if card_no is not None:
            key = select(Card.member_id).where(Card.card_no == card_no).scalar_subquery()
        else:
            key = select(Member.id).where(Member.phone_hash == phone_hash).scalar_subquery()
        row = conn.execute(
            select(Member.id, Member.store_id, Member.held_at).where(Member.id == key)
        ).first()
        if row is None:
            return Holding.ABSENT
        member_id, store_id, held_at = row
        if store_id == app.store_id:
            return Holding.HELD
        since = months_before(app.clock(), app.config.sync.hold_months)
        if held_at is not None and held_at >= since:
            return Holding.HELD
        last_here = conn.execute(
            select(func.max(LedgerEntry.created_at)).where(
                LedgerEntry.member_id == member_id, LedgerEntry.store_id == app.store_id
            )
        ).scalar()
    if last_here is not None and last_here >= since:
        return Holding.HELD
    return Holding.STALE


def fetch_if_unknown(
    app: AppContext, card_no: str | None = None, phone: str | None = None
) -> Fetched | None:
    """Fetches from HQ the member of a card or phone this kiosk does not hold (or holds but
    has not seen for ``sync.hold_months``: see :func:`holding`).

    Returns None when the member is held here (or the card or phone is malformed: the
    service's own check refuses it; or HQ cannot be asked about a member who is here, not
    seen for months, and is served from what is here), else what the fetch found.
    """
    try:
        number = parse_card_number(card_no) if card_no is not None else None
        digest = app.vault.lookup_hash(normalize_phone(phone)) if phone is not None else None
    except KioskError:
        return None
    if (number is None) == (digest is None):
        return None
    held = holding(app, number, digest)
    if held is Holding.HELD:
        return None
    fetched = fetch_member(app, card_no=number, phone_hash=digest)
    if fetched is Fetched.OFFLINE and held is Holding.STALE:
        log.info(
            "a member not seen here for months is served from what is here: HQ cannot be asked"
        )
        return None
    return fetched


def ensure_here(app: AppContext, card_no: str | None = None, phone: str | None = None) -> None:
    """A member met at this kiosk is here before the service reads them: one of another
    store is fetched from HQ first (:func:`fetch_if_unknown`).

    Raises:
        NotFound: the member is not here and HQ could not be asked (the kiosk syncs, but
            the agent or HQ did not answer in time). A member HQ does not know either is
            left to the service, which refuses as it always did.
    """
    if fetch_if_unknown(app, card_no, phone) is not Fetched.OFFLINE:
        return
    if not app.config.sync.enabled:
        return
    if card_no is not None:
        raise NotFound(
            f"card {card_no} is not known at this store, and HQ cannot be asked right now; "
            "please try again in a moment",
            code="unknown_card",
            card_no=card_no,
        )
    raise NotFound(
        "this phone number is not known at this store, and HQ cannot be asked right now; "
        "please try again in a moment",
        code="unknown_phone",
    )
