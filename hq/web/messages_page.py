"""The console's record of messages to members (``/messages``): what was sent, to whom
(masked), when, how it ended, after how many tries and with what error. Every role may look;
nothing is changed here. A sign-in code's text is never shown."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hq.messages import CANCELLED, FAILED, QUEUED, SENT
from hq.models import HqMessage
from hq.reminders import BIRTHDAY, COUPON, OTP, POINTS_EXPIRY
from hq.web.core import Console, Page
from hq.web.i18n import N_

__all__ = ["message_routes"]

STATUSES = (QUEUED, SENT, FAILED, CANCELLED)
PAGE_ROWS = 200
SIGN_IN_CODE = N_("(a sign-in code: not shown)")
STATUS_LABELS = {
    QUEUED: N_("waiting to be sent"),
    SENT: N_("sent to the gateway"),
    FAILED: N_("sending failed"),
    CANCELLED: N_("not sent (cancelled)"),
}
KIND_LABELS = {
    POINTS_EXPIRY: N_("points expiring"),
    BIRTHDAY: N_("birthday month"),
    COUPON: N_("new coupon"),
    OTP: N_("sign-in code"),
}


def message_routes(console: Console) -> list[BaseRoute]:
    def messages_page(page: Page) -> Response:
        status = page.query("status")
        status = status if status in STATUSES else ""
        member = page.query("member")[:26].strip()
        before = page.query("before")[:64]
        query = select(HqMessage)
        if status:
            query = query.where(HqMessage.status == status)
        if member:
            query = query.where(HqMessage.member_id == member)
        if before:
            when, _, last_id = before.partition("~")
            try:
                moment = datetime.fromisoformat(when)
            except ValueError:
                moment = None
            if moment is not None:
                query = query.where(
                    (HqMessage.created_at < moment)
                    | ((HqMessage.created_at == moment) & (HqMessage.id < last_id))
                )
        rows = list(
            page.session.scalars(
                query.order_by(HqMessage.created_at.desc(), HqMessage.id.desc()).limit(PAGE_ROWS)
            )
        )
        counted = select(HqMessage.status, func.count()).group_by(HqMessage.status)
        if member:
            counted = counted.where(HqMessage.member_id == member)
        counts = {s: int(n) for s, n in page.session.execute(counted)}
        older = f"{rows[-1].created_at.isoformat()}~{rows[-1].id}" if len(rows) == PAGE_ROWS else ""
        return page.render(
            "messages.html",
            rows=rows,
            statuses=STATUSES,
            shown=status,
            member=member,
            counts=counts,
            older=older,
            otp=OTP,
            hidden=SIGN_IN_CODE,
            status_labels=STATUS_LABELS,
            kind_labels=KIND_LABELS,
        )

    return [Route("/messages", console.view(messages_page))]
