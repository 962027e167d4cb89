"""A checkout lane, simulated: purchases of member cards at a rate, refunds, coupon checks.

It behaves as a lane should:

* every purchase carries a receipt id and is resent (same id) until the kiosk answers on the
  response topic, so a broker or kiosk restart loses nothing and the receipt id makes the
  resend harmless;
* it keeps the store's card list: the blocklist HQ pushes to every lane (``hq/blocklist``)
  and the cards the store's kiosk announces (``store/{store}/lanes/cards``: cards issued,
  blocked, lost or replaced). A card the list marks blocked, lost or replaced is refused at
  the till: no purchase is sent for it and it earns nothing. A card the list marks active
  (a card just issued, or unblocked) is sold to; a card the list has not heard of is sent
  to the kiosk, which knows every card of the chain and answers for it;
* a member's card comes with the member's tier and its member price (percent off); the
  lane charges that price and reports what was paid, which is what earns points;
* coupons are checked with the kiosk, and refunds told to it (request/response, correlated
  by the transaction or refund id; a refund is resent with its id until answered).

Messages are applied in arrival order, before the next purchase is rung up, so a block
takes effect at this lane from the first purchase after its message arrived.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge import __version__
from edge.domain.coupons import CouponKind, takes_off
from edge.domain.errors import Refusal
from edge.protocol import (
    BlocklistUpdate,
    CouponCheck,
    CouponCheckResult,
    DeviceStatus,
    LaneCards,
    LanePurchase,
    LanePurchaseResult,
    LaneRefund,
    LaneRefundResult,
    ProtocolError,
    Topics,
    decode,
)
from edge.protocol.link import Inbound, LinkSettings, MqttLink, TlsFiles

log = logging.getLogger(__name__)

ACTIVE = "active"
UPDATE_IDS_KEPT = 1000


@dataclass
class LaneReport:
    sent: int = 0
    resent: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Purchases the kiosk answered with a refusal, by its error code."""
    refused_at_till: dict[str, int] = field(default_factory=dict)
    """Purchases never sent: the lane's card list marks the card this (blocked, lost ...)."""
    points: int = 0
    receipts: list[str] = field(default_factory=list)
    member_price_cents: int = 0
    """Taken off the prices of the purchases sent, by the members' tiers (会员价)."""
    prices: dict[str, int] = field(default_factory=dict)
    """Each receipt's price before the member price (what was charged is in the purchase)."""


class CardList:
    """The lane's card list: the last word it heard about each card, kept in a file if given.

    ``apply_*`` return the cards whose state changed. A blocklist update is applied once per
    ``update_id`` and never after its expiry.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.states: dict[str, str] = {}
        self.tiers: dict[str, tuple[str, int]] = {}  # card: its member's tier, member price
        self.updates: list[str] = []
        if path is not None and path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            self.states = {str(k): str(v) for k, v in raw.get("cards", {}).items()}
            self.tiers = {str(k): (str(t), int(p)) for k, (t, p) in raw.get("tiers", {}).items()}
            self.updates = [str(u) for u in raw.get("updates", [])]

    def state(self, card_no: str) -> str | None:
        return self.states.get(card_no)

    def member_price_pct(self, card_no: str) -> int:
        """Percent off the price for this card's member's tier (0 when the list has none)."""
        return self.tiers.get(card_no, ("", 0))[1]

    def refusal(self, card_no: str) -> str | None:
        """Why the till refuses this card (its state), or None when it may be sold to."""
        state = self.states.get(card_no)
        return state if state is not None and state != ACTIVE else None

    def apply_cards(self, message: LaneCards) -> list[str]:
        changed = [c.card_no for c in message.cards if self.states.get(c.card_no) != c.state]
        priced = False
        for card in message.cards:
            self.states[card.card_no] = card.state
            if card.tier is not None:
                benefit = (card.tier, card.member_price_pct)
                priced = priced or self.tiers.get(card.card_no) != benefit
                self.tiers[card.card_no] = benefit
        if changed or priced:
            self._save()
        return changed

    def apply_blocklist(self, update: BlocklistUpdate, now: datetime) -> list[str]:
        if update.expires_at <= now or update.update_id in self.updates:
            return []
        blocked = "lost" if update.reason == "lost" else "blocked"
        changed: list[str] = []
        for card_no in update.add:
            if self.states.get(card_no) in (None, ACTIVE):
                self.states[card_no] = blocked
                changed.append(card_no)
        for card_no in update.remove:
            if self.states.get(card_no) in ("blocked", "lost"):
                self.states[card_no] = ACTIVE
                changed.append(card_no)
        self.updates = [*self.updates, update.update_id][-UPDATE_IDS_KEPT:]
        self._save()  # the update id at least is new: it must not be applied again
        return changed

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {"cards": self.states, "tiers": self.tiers, "updates": self.updates},
                sort_keys=True,
            ),
            encoding="utf-8",
        )
        os.replace(tmp, self.path)


class Lane:
    """One lane's MQTT client (CN = lane id), its card list and its pending requests."""

    def __init__(
        self,
        store_id: str,
        lane_id: str,
        host: str,
        port: int,
        tls: TlsFiles | None,
        prefix: str = "mck/v1",
        cards_file: Path | None = None,
    ) -> None:
        self.store_id, self.lane_id = store_id, lane_id
        self.topics = Topics(prefix)
        self.cards = CardList(cards_file)
        self.dropped = 0
        self._pending: dict[str, tuple[LanePurchase, float]] = {}
        self._report = LaneReport()
        self._answers: dict[bytes, bytes] = {}  # coupon and refund answers, by correlation

        def status(state: str) -> Callable[[], bytes]:
            return lambda: DeviceStatus(
                device_id=lane_id,
                store_id=store_id,
                role="lane",
                state=state,
                at=datetime.now(UTC),
                version=__version__,
            ).to_bytes()

        self.result_topic = self.topics.lane_purchase_result(store_id, lane_id)
        self.coupon_topic = self.topics.lane_coupon_result(store_id, lane_id)
        self.refund_topic = self.topics.lane_refund_result(store_id, lane_id)
        self.cards_topic = self.topics.lane_cards(store_id)
        self.blocklist_topic = self.topics.blocklist()
        self.link = MqttLink(
            LinkSettings(
                client_id=lane_id,
                host=host,
                port=port,
                tls=tls,
                status_topic=self.topics.status(lane_id),
                online_payload=status("online"),
                offline_payload=status("offline"),
                subscriptions=(
                    (self.result_topic, 1),
                    (self.coupon_topic, 1),
                    (self.refund_topic, 1),
                    (self.cards_topic, 1),
                    (self.blocklist_topic, 1),
                ),
                reconnect_min_s=0.2,
                reconnect_max_s=3.0,
            )
        )

    def __enter__(self) -> Lane:
        self.link.start()
        self.link.wait_connected(15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.close()

    def purchase(self, purchase: LanePurchase) -> bool:
        return self.link.publish(
            self.topics.lane_purchase(self.store_id, self.lane_id),
            purchase.to_bytes(),
            qos=1,
            response_topic=self.result_topic,
            correlation=purchase.receipt_id.encode(),
        )

    # ------------------------------------------------------------------ the card list

    def card_state(self, card_no: str) -> str | None:
        """What the lane's list says about a card (None: not heard of)."""
        return self.cards.state(card_no)

    def wait_card_state(self, card_no: str, state: str | None, timeout_s: float) -> bool:
        """Applies arriving messages until the list says ``state`` for the card."""
        deadline = time.monotonic() + timeout_s
        while self.cards.state(card_no) != state:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(min(0.2, remaining))
        return True

    def poll(self, wait_s: float) -> None:
        """Applies every message that has arrived, waiting up to ``wait_s`` for the first."""
        try:
            item = (
                self.link.inbox.get(timeout=wait_s) if wait_s > 0 else self.link.inbox.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            if isinstance(item, Inbound):
                self._handle(item)
            try:
                item = self.link.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: Inbound) -> None:
        try:
            if item.topic == self.result_topic:
                self._on_result(decode(LanePurchaseResult, item.payload))
            elif item.topic in (self.coupon_topic, self.refund_topic):
                if item.correlation is not None:
                    self._answers[item.correlation] = item.payload
            elif item.topic == self.cards_topic:
                self.cards.apply_cards(decode(LaneCards, item.payload))
            elif item.topic == self.blocklist_topic:
                update = decode(BlocklistUpdate, item.payload)
                if item.expiry_s is not None and item.expiry_s <= 0:
                    raise ProtocolError("blocklist update past its MQTT message expiry")
                self.cards.apply_blocklist(update, datetime.now(UTC))
        except ProtocolError as exc:
            self.dropped += 1
            log.warning("dropped message on %s: %s", item.topic[:120], exc)
        self.link.ack(item)

    def _on_result(self, result: LanePurchaseResult) -> None:
        report = self._report
        if self._pending.pop(result.receipt_id, None) is None:
            return  # a late answer to a resend already answered
        if result.ok:
            report.accepted += 1
            report.points += result.points
        else:
            report.refused[result.error] = report.refused.get(result.error, 0) + 1

    # ------------------------------------------------------------------ selling

    def simulate(
        self,
        cards: list[str],
        count: int,
        rate_per_s: float,
        *,
        resend_after_s: float = 5.0,
        deadline_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> LaneReport:
        """Rings up ``count`` purchases at ``rate_per_s`` and waits until each sent one is
        answered; purchases for cards the list refuses are counted, not sent."""
        rng = rng or random.Random()
        report = self._report = LaneReport()
        pending = self._pending = {}
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        next_send = time.monotonic()
        end = time.monotonic() + deadline_s
        made = 0
        while (made < count or pending) and time.monotonic() < end:
            self.poll(0)
            now = time.monotonic()
            if made < count and now >= next_send:
                card_no = rng.choice(cards)
                price = rng.randint(100, 50_000)
                made += 1
                next_send += interval
                refusal = self.cards.refusal(card_no)
                if refusal is not None:
                    report.refused_at_till[refusal] = report.refused_at_till.get(refusal, 0) + 1
                    continue
                # the member pays the member price of their tier; points follow what is paid
                off = price * self.cards.member_price_pct(card_no) // 100
                report.member_price_cents += off
                purchase = LanePurchase(
                    receipt_id=f"{self.lane_id}-{secrets.token_hex(6)}-{made}",
                    lane_id=self.lane_id,
                    card_no=card_no,
                    amount_cents=price - off,
                    at=datetime.now(UTC),
                )
                self.purchase(purchase)
                pending[purchase.receipt_id] = (purchase, now)
                report.sent += 1
                report.receipts.append(purchase.receipt_id)
                report.prices[purchase.receipt_id] = price
            for rid, (p, sent_at) in list(pending.items()):
                if now - sent_at > resend_after_s and self.link.connected:
                    self.purchase(p)
                    pending[rid] = (p, now)
                    report.resent += 1
            self.poll(0.01 if made < count else 0.2)
        return report

    def check_coupon(
        self, code: str, use: bool = True, timeout_s: float = 15.0
    ) -> CouponCheckResult:
        """Asks the store's kiosk about a printed coupon (request/response, transaction id)."""
        transaction = secrets.token_hex(8)
        check = CouponCheck(
            transaction=transaction, lane_id=self.lane_id, code=code, ref=transaction, use=use
        )
        topic = self.topics.lane_coupon(self.store_id, self.lane_id)
        answer = self._ask(topic, check.to_bytes(), self.coupon_topic, transaction, timeout_s)
        if answer is None:
            raise TimeoutError(f"no answer about the coupon in {timeout_s:.0f} s")
        return decode(CouponCheckResult, answer)

    def take_coupon(
        self, code: str, basket_cents: int, timeout_s: float = 15.0
    ) -> tuple[CouponCheckResult, int]:
        """A coupon at the till on a basket of ``basket_cents``: checked first, and spent
        only when it applies to this basket (a 满减 coupon on a smaller basket is refused here
        and stays the member's); the kiosk's answer and what comes off the basket (0 when
        refused, and for a gift coupon, which gives the gift)."""
        checked = self.check_coupon(code, use=False, timeout_s=timeout_s)
        if not checked.ok:
            return checked, 0
        kind = checked.kind or CouponKind.AMOUNT_OFF  # what a kiosk-printed coupon gives
        try:
            off = takes_off(
                kind, checked.value_cents, checked.threshold_cents, checked.percent, basket_cents
            )
        except Refusal as refusal:
            refused = checked.model_copy(
                update={"ok": False, "error": refusal.code, "message": str(refusal)}
            )
            return refused, 0
        used = self.check_coupon(code, use=True, timeout_s=timeout_s)
        return used, off if used.ok else 0

    def refund(
        self,
        receipt_id: str,
        amount_cents: int,
        refund_id: str | None = None,
        timeout_s: float = 15.0,
    ) -> LaneRefundResult:
        """Tells the store's kiosk that money was returned on a receipt; resent (same refund
        id) until the kiosk answers with the points it took back, or why it refused."""
        refund = LaneRefund(
            refund_id=refund_id or f"{self.lane_id}-RF-{secrets.token_hex(6)}",
            receipt_id=receipt_id,
            lane_id=self.lane_id,
            amount_cents=amount_cents,
            at=datetime.now(UTC),
        )
        topic = self.topics.lane_refund(self.store_id, self.lane_id)
        answer = self._ask(topic, refund.to_bytes(), self.refund_topic, refund.refund_id, timeout_s)
        if answer is None:
            raise TimeoutError(f"no answer about refund {refund.refund_id} in {timeout_s:.0f} s")
        return decode(LaneRefundResult, answer)

    def _ask(
        self, topic: str, payload: bytes, response_topic: str, key: str, timeout_s: float
    ) -> bytes | None:
        """Publishes a request (again every 5 s while unanswered) and waits for the answer
        correlated with ``key``; None when none came in ``timeout_s``."""
        correlation = key.encode()
        deadline = time.monotonic() + timeout_s
        sent_at = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - sent_at > 5.0 and self.link.connected:
                self.link.publish(
                    topic, payload, qos=1, response_topic=response_topic, correlation=correlation
                )
                sent_at = time.monotonic()
            self.poll(0.2)
            answer = self._answers.pop(correlation, None)
            if answer is not None:
                return answer
        return None
