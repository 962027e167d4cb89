"""The agent's side of checking another kiosk's gift voucher with HQ.

The kiosk's processes ask through the agent's socket (:mod:`edge.services.remote`, the same
one member fetches use); the agent sends HQ an MQTT 5 request (:class:`~edge.protocol.
VoucherCheck`, answered on the device's own ``voucher`` topic with the correlation data it
sent) and hands HQ's answer back as it came, or ``offline`` when HQ did not answer in time.
The service decides what the answer means; the agent stores nothing.
"""

from __future__ import annotations

from datetime import date

from edge.app import AppContext
from edge.protocol import ProtocolError, Topics, VoucherCheck, VoucherCheckResult, decode
from edge.protocol.link import MqttLink


class VoucherChecker:
    """Asks HQ about a gift voucher another kiosk printed, claiming it when told to."""

    def __init__(self, app: AppContext, link: MqttLink, topics: Topics) -> None:
        self.app = app
        self.link = link
        self.topics = topics
        self.asked = 0

    def check(
        self,
        issuer_device_id: str,
        voucher_id: str,
        claim: bool,
        today: date | None,
        code: str = "",
    ) -> VoucherCheckResult | None:
        """HQ's answer, or None when HQ did not answer within ``sync.fetch_timeout_s``."""
        me = self.app.device_id
        try:
            request = VoucherCheck(
                device_id=me,
                store_id=self.app.store_id,
                issuer_device_id=issuer_device_id,
                voucher_id=voucher_id,
                claim=claim,
                today=today,
                code=code,
            )
        except ValueError as exc:
            raise ProtocolError(f"not a voucher check: {exc}") from None
        self.asked += 1
        answer = self.link.request(
            self.topics.voucher_check(me),
            request.to_bytes(),
            self.topics.voucher(me),
            self.app.config.sync.fetch_timeout_s,
        )
        if answer is None:
            return None
        result = decode(VoucherCheckResult, answer.payload)
        if (result.issuer_device_id, result.voucher_id) != (issuer_device_id, voucher_id):
            raise ProtocolError("HQ answered about another voucher")
        return result
