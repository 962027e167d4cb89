"""The agent's side of asking HQ about its coupons.

The kiosk's processes ask through the agent's socket (:mod:`edge.services.remote`, as member
fetches and voucher checks do); the agent sends HQ an MQTT 5 request (:class:`~edge.protocol.
CouponAsk`, answered on the device's own ``coupon`` topic) and hands HQ's answer back as it
came, or ``offline`` when HQ did not answer in time. The service decides what it means.
"""

from __future__ import annotations

from edge.app import AppContext
from edge.protocol import CouponAnswer, CouponAsk, ProtocolError, Topics, decode
from edge.protocol.link import MqttLink


class CouponAsker:
    """Asks HQ for a member's wallet, or to check or use one of HQ's coupons."""

    def __init__(self, app: AppContext, link: MqttLink, topics: Topics) -> None:
        self.app = app
        self.link = link
        self.topics = topics
        self.asked = 0

    def ask(self, asked: dict[str, object]) -> CouponAnswer | None:
        """HQ's answer to ``asked`` (action, member_id or coupon_id, ref), or None when HQ
        did not answer within ``sync.fetch_timeout_s``."""
        me = self.app.device_id
        try:
            request = CouponAsk.model_validate(
                {**asked, "device_id": me, "store_id": self.app.store_id}, strict=True
            )
        except ValueError as exc:
            raise ProtocolError(f"not a coupon question: {str(exc).splitlines()[0]}") from None
        self.asked += 1
        answer = self.link.request(
            self.topics.coupon_ask(me),
            request.to_bytes(),
            self.topics.coupon_answer(me),
            self.app.config.sync.fetch_timeout_s,
        )
        if answer is None:
            return None
        result = decode(CouponAnswer, answer.payload)
        if (result.action, result.member_id, result.coupon_id) != (
            request.action,
            request.member_id,
            request.coupon_id,
        ):
            raise ProtocolError("HQ answered another question about coupons")
        return result
