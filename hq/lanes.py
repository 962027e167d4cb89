"""A checkout lane, simulated: purchases of member cards at a rate, and coupon checks.

It behaves as a lane should: every purchase carries a receipt id and is resent (same id)
until the kiosk answers on the response topic, so a broker or kiosk restart loses nothing
and the receipt id makes the resend harmless.
"""

from __future__ import annotations

import queue
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge import __version__
from edge.protocol import (
    CouponCheck,
    CouponCheckResult,
    DeviceStatus,
    LanePurchase,
    LanePurchaseResult,
    ProtocolError,
    Topics,
    decode,
)
from edge.protocol.link import Inbound, LinkSettings, MqttLink, TlsFiles


@dataclass
class LaneReport:
    sent: int = 0
    resent: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    points: int = 0
    receipts: list[str] = field(default_factory=list)


class Lane:
    """One lane's MQTT client (CN = lane id) and its pending requests."""

    def __init__(
        self,
        store_id: str,
        lane_id: str,
        host: str,
        port: int,
        tls: TlsFiles | None,
        prefix: str = "mck/v1",
    ) -> None:
        self.store_id, self.lane_id = store_id, lane_id
        self.topics = Topics(prefix)

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
        self.link = MqttLink(
            LinkSettings(
                client_id=lane_id,
                host=host,
                port=port,
                tls=tls,
                status_topic=self.topics.status(lane_id),
                online_payload=status("online"),
                offline_payload=status("offline"),
                subscriptions=((self.result_topic, 1), (self.coupon_topic, 1)),
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
        """Publishes ``count`` purchases at ``rate_per_s`` and waits until each is answered."""
        rng = rng or random.Random()
        report = LaneReport()
        pending: dict[str, tuple[LanePurchase, float]] = {}
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        next_send = time.monotonic()
        end = time.monotonic() + deadline_s
        made = 0
        while (made < count or pending) and time.monotonic() < end:
            now = time.monotonic()
            if made < count and now >= next_send:
                purchase = LanePurchase(
                    receipt_id=f"{self.lane_id}-{secrets.token_hex(6)}-{made}",
                    lane_id=self.lane_id,
                    card_no=rng.choice(cards),
                    amount_cents=rng.randint(100, 50_000),
                    at=datetime.now(UTC),
                )
                self.purchase(purchase)
                pending[purchase.receipt_id] = (purchase, now)
                report.sent += 1
                report.receipts.append(purchase.receipt_id)
                made += 1
                next_send += interval
            for rid, (p, sent_at) in list(pending.items()):
                if now - sent_at > resend_after_s and self.link.connected:
                    self.purchase(p)
                    pending[rid] = (p, now)
                    report.resent += 1
            self._collect(pending, report, 0.01 if made < count else 0.2)
        return report

    def _collect(
        self, pending: dict[str, tuple[LanePurchase, float]], report: LaneReport, wait_s: float
    ) -> None:
        try:
            item = self.link.inbox.get(timeout=wait_s)
        except queue.Empty:
            return
        while True:
            if isinstance(item, Inbound):
                self.link.ack(item)
                if item.topic == self.result_topic:
                    try:
                        result = decode(LanePurchaseResult, item.payload)
                    except ProtocolError:
                        result = None
                    if result is not None and pending.pop(result.receipt_id, None) is not None:
                        if result.ok:
                            report.accepted += 1
                            report.points += result.points
                        else:
                            report.refused[result.error] = report.refused.get(result.error, 0) + 1
            try:
                item = self.link.inbox.get_nowait()
            except queue.Empty:
                return

    def check_coupon(
        self, code: str, use: bool = True, timeout_s: float = 15.0
    ) -> CouponCheckResult:
        """Asks the store's kiosk about a printed coupon (request/response, transaction id)."""
        transaction = secrets.token_hex(8)
        check = CouponCheck(
            transaction=transaction, lane_id=self.lane_id, code=code, ref=transaction, use=use
        )
        topic = self.topics.lane_coupon(self.store_id, self.lane_id)
        deadline = time.monotonic() + timeout_s
        sent_at = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - sent_at > 5.0 and self.link.connected:
                self.link.publish(
                    topic,
                    check.to_bytes(),
                    qos=1,
                    response_topic=self.coupon_topic,
                    correlation=transaction.encode(),
                )
                sent_at = time.monotonic()
            try:
                item = self.link.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Inbound):
                self.link.ack(item)
                if item.topic == self.coupon_topic and item.correlation == transaction.encode():
                    return decode(CouponCheckResult, item.payload)
        raise TimeoutError(f"no answer about the coupon in {timeout_s:.0f} s")
