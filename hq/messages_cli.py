"""``kiosk hq messages ...``: reminders to members and the queue of messages HQ sends.

``remind`` plans the reminders due and sends what is due (the systemd timer
``member-kiosk-hq-remind.timer`` runs it); ``send-due`` only sends; ``list`` shows what was
sent, to whom (masked), when and how it ended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from edge.console import NumberRange, show
from edge.domain.errors import ConfigError
from edge.domain.text import escape_controls
from hq.console import config_of

if TYPE_CHECKING:
    from edge.progress import Progress
    from hq.messages import Sender
    from hq.service import HqConfig

STATUSES = ("queued", "sent", "failed", "cancelled")


@click.group("messages")
def messages_group() -> None:
    """Messages to members: reminders (points expiring, birthday month, coupons), their
    delivery through the configured sender, and the record of every message."""


def _sender(config: HqConfig) -> Sender:
    sender = config.messages.make_sender()
    if sender is None:
        raise ConfigError(
            "no message sender is set: set sender in [messages] of HQ's config "
            "(file:PATH or http:URL)",
            code="sender_missing",
        )
    return sender


class _Bar:
    """A progress bar shown once the work's size is known (on stderr)."""

    def __init__(self, what: str, unit: str) -> None:
        self.what, self.unit = what, unit
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        from edge.progress import Progress

        if self.bar is None:
            self.bar = Progress(self.what, total, self.unit)
        self.bar.advance(done - self.bar.done)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def _deliver(config: HqConfig, sender: Sender, limit: int | None) -> dict[str, int]:
    from hq.reminders import deliver_due
    from hq.service import open_hq_engine

    engine = open_hq_engine(config.database_url)
    bar = _Bar("sending", "messages")
    try:
        report = deliver_due(
            engine,
            config.message_vault(),
            sender,
            config.messages,
            lambda: datetime.now(UTC),
            limit=limit,
            progress=bar,
        )
    finally:
        bar.finish()
        engine.dispose()
    return report.as_dict()


def _delivery_text(d: dict[str, int]) -> str:
    return (
        f"{d['sent']} sent, {d['retrying']} to be tried again, {d['failed']} failed, "
        f"{d['cancelled']} cancelled, {d['held']} held (quiet hours or weekly cap)"
    )


_limit = click.option(
    "--limit", type=NumberRange(1, 10_000_000), help="Send at most this many (default: all due)."
)


@messages_group.command("remind")
@_limit
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def remind_command(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """Queue the reminders due to members with consent (each once), then send every message
    that is due. Run by member-kiosk-hq-remind.timer; safe to run again at any time."""
    from sqlalchemy.orm import Session

    from hq.reminders import plan_reminders
    from hq.service import open_hq_engine

    config = config_of(ctx)
    sender = _sender(config)
    vault = config.message_vault()
    engine = open_hq_engine(config.database_url)
    bar = _Bar("planning", "members")
    try:
        plan = plan_reminders(
            lambda: Session(engine),
            vault,
            config.messages,
            datetime.now(UTC),
            sender_name=sender.name,
            progress=bar,
        )
    finally:
        bar.finish()
        engine.dispose()
    delivery = _deliver(config, sender, limit)
    queued = plan.queued
    show(
        {"planned": plan.as_dict(), "delivered": delivery},
        as_json,
        f"{plan.members} members with consent: queued {queued['points_expiry']} points-expiry, "
        f"{queued['birthday']} birthday and {queued['coupon']} coupon reminders"
        + (f" ({plan.unreadable} members' numbers could not be opened)" if plan.unreadable else "")
        + f"; {_delivery_text(delivery)}",
    )


@messages_group.command("send-due")
@_limit
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def send_due_command(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """Send every queued message whose time has come (retries included)."""
    config = config_of(ctx)
    delivery = _deliver(config, _sender(config), limit)
    show(delivery, as_json, _delivery_text(delivery))


def _row(m: Any) -> dict[str, object]:
    return {
        "id": m.id,
        "member_id": m.member_id,
        "kind": m.kind,
        "to": m.phone_masked,
        "status": m.status,
        "created_at": m.created_at,
        "due_at": m.due_at,
        "sent_at": m.sent_at,
        "attempts": m.attempts,
        "sender": m.sender,
        "provider_ref": m.provider_ref,
        "last_error": m.last_error,
        "text": "(a sign-in code: not shown)" if m.kind == "otp" else m.body,
    }


def _table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no messages"
    lines = []
    for r in rows:
        when: Callable[[object], str] = lambda t: (  # noqa: E731
            t.strftime("%Y-%m-%d %H:%M") if isinstance(t, datetime) else "-"
        )
        error = f"  {r['last_error']}" if r["last_error"] else ""
        lines.append(
            escape_controls(
                f"{r['id']}  {r['kind']:<13} {r['to']:<12} {r['status']:<9} "
                f"made {when(r['created_at'])}  sent {when(r['sent_at'])}  "
                f"tries {r['attempts']}{error}"
            )
        )
    return "\n".join(lines)


@messages_group.command("list")
@click.option("--member", "member_id", default="", help="Only this member's messages (id).")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--limit", type=NumberRange(1, 100_000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(
    ctx: click.Context, member_id: str, status: str | None, limit: int, as_json: bool
) -> None:
    """The newest messages: what, to whom (masked), when, how it ended, tries, last error."""
    from sqlalchemy.orm import Session

    from hq.reminders import messages
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    try:
        with Session(engine) as session:
            found = messages(session, member_id=member_id, status=status or "", limit=limit)
            rows = [_row(m) for m in found]
    finally:
        engine.dispose()
    show(rows, as_json, _table(rows))


def add_messages_commands(group: click.Group) -> None:
    group.add_command(messages_group)
