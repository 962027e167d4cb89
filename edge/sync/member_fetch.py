"""The agent's side of fetching a member of another store from HQ.

The kiosk's processes (the touchscreen, the console, the agent's own lane handling) ask
through a Unix socket in the data directory (:mod:`edge.services.remote`). The agent asks HQ
with an MQTT 5 request (:class:`~edge.protocol.MemberFetch`, answered on the device's own
``member`` topic with the correlation data it sent), applies the snapshot in one transaction
(:func:`~edge.services.replica.apply_fetched_member`) and answers ``found``, ``unknown`` or
``offline``. Each connection is served on its own thread, so a slow HQ holds up no one else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path

from edge.app import AppContext
from edge.domain.errors import DiskFull
from edge.protocol import MemberFetch, MemberFetchResult, ProtocolError, Topics, decode
from edge.protocol.link import MqttLink
from edge.services.remote import MAX_LINE, Fetched, fetch_socket_path
from edge.services.replica import apply_fetched_member
from edge.sync.coupon_ask import CouponAsker
from edge.sync.voucher_check import VoucherChecker

log = logging.getLogger(__name__)


class MemberFetcher:
    """Asks HQ for a member and applies the answer; ``on_cards`` tells the store's lanes."""

    def __init__(
        self,
        app: AppContext,
        link: MqttLink,
        topics: Topics,
        on_cards: Callable[[list[tuple[str, str]]], object],
    ) -> None:
        self.app = app
        self.link = link
        self.topics = topics
        self.on_cards = on_cards
        self.asked = 0
        self.found = 0

    def fetch(self, card_no: str | None = None, phone_hash: str | None = None) -> Fetched:
        me = self.app.device_id
        try:
            request = MemberFetch(
                device_id=me,
                store_id=self.app.store_id,
                card_no=card_no,
                phone_hash=phone_hash,
                redemptions=True,
            )
        except ValueError as exc:
            raise ProtocolError(f"not a member fetch: {exc}") from None
        self.asked += 1
        answer = self.link.request(
            self.topics.member_fetch(me),
            request.to_bytes(),
            self.topics.member(me),
            self.app.config.sync.fetch_timeout_s,
        )
        if answer is None:
            return Fetched.OFFLINE
        return self.apply(decode(MemberFetchResult, answer.payload))

    def apply(self, result: MemberFetchResult) -> Fetched:
        """HQ's answer, on time or late (a late one is applied all the same)."""
        if result.member is None:
            return Fetched.UNKNOWN
        outcome = apply_fetched_member(self.app, result.member)
        self.found += 1
        if outcome.cards:
            self.on_cards(outcome.cards)
        return Fetched.FOUND


class FetchServer:
    """Serves :mod:`edge.services.remote`'s requests on ``<data dir>/agent.sock``: member
    fetches, voucher checks (a line ``{"voucher": {...}}``) when ``vouchers`` is given, and
    questions about HQ's coupons (``{"coupon": {...}}``) when ``coupons`` is."""

    def __init__(
        self,
        app: AppContext,
        fetcher: MemberFetcher,
        vouchers: VoucherChecker | None = None,
        coupons: CouponAsker | None = None,
    ) -> None:
        self.path = fetch_socket_path(app)
        self.fetcher = fetcher
        self.vouchers = vouchers
        self.coupons = coupons
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound with the process's umask (which leaves others no write, so none can connect),
        # then opened to the kiosk's group: the umask is the whole process's, and changing
        # it here would race every other thread that creates a file or starts a process.
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="member-fetch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            _unlink_if_ours(self.path)

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._answer, args=(conn,), name="member-fetch-conn", daemon=True
            ).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.fetcher.app.config.sync.fetch_timeout_s + 1.0)
            try:
                line = conn.makefile("rb").readline(MAX_LINE)
                asked = json.loads(line)
                if isinstance(asked, dict) and ("voucher" in asked or "coupon" in asked):
                    answer = (
                        self._check_voucher(asked["voucher"])
                        if "voucher" in asked
                        else self._ask_coupons(asked["coupon"])
                    )
                    with contextlib.suppress(OSError):
                        conn.sendall(answer + b"\n")
                    return
                card_no, phone_hash = asked.get("card_no"), asked.get("phone_hash")
                if not isinstance(card_no, str | None) or not isinstance(phone_hash, str | None):
                    raise ProtocolError("card_no and phone_hash are strings")
                result = self.fetcher.fetch(card_no=card_no, phone_hash=phone_hash)
            except (ValueError, AttributeError) as exc:
                log.warning("a member fetch was not understood: %s", exc)
                result = Fetched.OFFLINE
            except DiskFull as exc:
                log.error("a fetched member could not be stored: %s", exc.message)
                result = Fetched.OFFLINE
            except Exception:
                log.exception("a member fetch failed")
                result = Fetched.OFFLINE
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"result": str(result)}).encode() + b"\n")

    def _check_voucher(self, asked: object) -> bytes:
        """``{"result": "answered", "answer": <HQ's VoucherCheckResult>}``, or ``offline``."""
        try:
            if self.vouchers is None or not isinstance(asked, dict):
                raise ProtocolError("not a voucher check")
            issuer, voucher_id = asked.get("issuer_device_id"), asked.get("voucher_id")
            claim, today = asked.get("claim", False), asked.get("today")
            code = asked.get("code", "")
            if not (isinstance(issuer, str) and isinstance(voucher_id, str)):
                raise ProtocolError("issuer_device_id and voucher_id are strings")
            if not isinstance(code, str):
                raise ProtocolError("a voucher's code is a string")
            if not isinstance(claim, bool) or not isinstance(today, str | None):
                raise ProtocolError("claim is true or false, today a date")
            result = self.vouchers.check(
                issuer, voucher_id, claim, date.fromisoformat(today) if today else None, code
            )
        except (ValueError, AttributeError) as exc:
            log.warning("a voucher check was not understood: %s", exc)
            result = None
        except Exception:
            log.exception("a voucher check failed")
            result = None
        if result is None:
            return json.dumps({"result": "offline"}).encode()
        return json.dumps({"result": "answered", "answer": result.model_dump(mode="json")}).encode()

    def _ask_coupons(self, asked: object) -> bytes:
        """``{"result": "answered", "answer": <HQ's CouponAnswer>}``, or ``offline``."""
        try:
            if self.coupons is None or not isinstance(asked, dict):
                raise ProtocolError("not a question about coupons")
            result = self.coupons.ask(asked)
        except (ValueError, AttributeError) as exc:
            log.warning("a question about coupons was not understood: %s", exc)
            result = None
        except Exception:
            log.exception("a question about coupons failed")
            result = None
        if result is None:
            return json.dumps({"result": "offline"}).encode()
        return json.dumps({"result": "answered", "answer": result.model_dump(mode="json")}).encode()


def _unlink_if_ours(path: Path) -> None:
    if path.is_socket():
        path.unlink()
