"""``kiosk points``: accrue a purchase, check in, birthday bonus, expire; and the member
desk's corrections: adjust, settle an overdraft, refund a receipt."""

from __future__ import annotations

from datetime import datetime

import click

from edge.app import AppContext
from edge.cli.common import emit, json_option, state
from edge.cli.staff_auth import staff_login
from edge.console import NUMBER
from edge.domain.clock import ensure_utc
from edge.domain.corrections import ADJUSTMENT_REASONS, SETTLEMENT_REASONS
from edge.domain.staff import Permission
from edge.lifecycle import busy
from edge.services import corrections, points
from edge.services.staff import StaffIdentity


@click.group("points")
def points_group() -> None:
    """Points: accrual, check-in, expiry."""


@points_group.command("accrue")
@click.option("--card", required=True)
@click.option("--amount-cents", required=True, type=NUMBER, help="Purchase amount in cents (fen).")
@click.option(
    "--ref", "receipt_id", required=True, help="Receipt id (a resent receipt is ignored)."
)
@json_option
def accrue_cmd(card: str, amount_cents: int, receipt_id: str) -> None:
    """Credit the points of a purchase."""
    result = points.accrue_purchase(state().app, card, amount_cents, receipt_id, actor="console")

    def human(r: points.Accrual) -> str:
        if r.duplicate:
            return (
                f"receipt {r.receipt_id} was already credited ({r.points} points); nothing changed"
            )
        extra = f"; upgraded to {r.upgraded_to}" if r.upgraded_to else ""
        return f"+{r.points} points for receipt {r.receipt_id}; balance {r.balance}{extra}"

    emit(result, human)


@points_group.command("checkin")
@click.option("--card", required=True)
@json_option
def checkin_cmd(card: str) -> None:
    """Daily check-in points (once per day)."""
    emit(
        points.check_in(state().app, card),
        lambda r: f"checked in: +{r.points} points; balance {r.balance}",
    )


@points_group.command("birthday")
@click.option("--card", required=True)
@json_option
def birthday_cmd(card: str) -> None:
    """Claim the birthday bonus (birthday month, once a year)."""
    emit(
        points.claim_birthday_bonus(state().app, card),
        lambda r: f"happy birthday: +{r.points} points; balance {r.balance}",
    )


@points_group.command("expire")
@click.option("--now", "now_text", default=None, help="ISO time with zone (default: now).")
@json_option
def expire_cmd(now_text: str | None) -> None:
    """Write off points past their expiry date."""
    now = None
    if now_text is not None:
        try:
            now = ensure_utc(datetime.fromisoformat(now_text))
        except ValueError as exc:
            raise click.BadParameter(f"{now_text!r}: {exc}", param_hint="--now") from None
    app = state().app
    # the daily timer's job: an update waits for it, and it waits for an update (the update
    # stops only the app and the agent, and snapshots the database while they are stopped)
    with busy.hold("expiring points", app.data_dir):
        result = points.expire_points(app, now)
    emit(result, lambda r: f"expired {r.points} points in {r.lots} lots of {r.members} members")


@points_group.command("review-tiers")
@json_option
def review_tiers_cmd() -> None:
    """Apply tier downgrades (and upgrades) due at the end of members' tier periods."""
    from edge.services.tiers import review_tiers

    emit(
        review_tiers(state().app),
        lambda r: f"reviewed {r.reviewed}: {r.downgraded} down, {r.upgraded} up",
    )


def _approver(app: AppContext, approver_id: str | None) -> StaffIdentity | None:
    """The approving supervisor, signed in with their own PIN (the next line of input)."""
    if approver_id is None:
        return None
    return staff_login(app, approver_id, Permission.APPROVE_ADJUSTMENT)


def _adjusted(r: corrections.AdjustmentResult) -> str:
    sign = "+" if r.points > 0 else ""
    approved = f", approved by {r.approved_by}" if r.approved_by else ""
    owed = "; ATTENTION: the member owes points (flagged for staff)" if r.overdraft else ""
    return (
        f"{sign}{r.points} points ({r.reason}{approved}) for card {r.card_no}; "
        f"balance {r.balance}{owed}"
    )


@points_group.command("adjust")
@click.option("--card", required=True)
@click.option("--points", "amount", required=True, type=NUMBER, help="Credit (+) or debit (-).")
@click.option(
    "--reason", required=True, type=click.Choice(sorted(r.value for r in ADJUSTMENT_REASONS))
)
@click.option("--note", default="", help="What happened, in a line (shown in the history).")
@click.option("--staff", "staff_id", required=True)
@click.option("--approver", "approver_id", default=None, help="A supervisor's staff id.")
@json_option
def adjust_cmd(
    card: str, amount: int, reason: str, note: str, staff_id: str, approver_id: str | None
) -> None:
    """Credit or take points with a reason (PINs on standard input: staff, then approver)."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.ADJUST_POINTS)
    approver = _approver(app, approver_id)
    emit(corrections.adjust_points(app, card, amount, reason, note, staff, approver), _adjusted)


@points_group.command("settle")
@click.option("--card", required=True)
@click.option(
    "--how",
    required=True,
    type=click.Choice(sorted(r.value for r in SETTLEMENT_REASONS)),
    help="Made good by the member, or written off by the chain.",
)
@click.option("--note", required=True, help="What happened, in a line.")
@click.option("--staff", "staff_id", required=True)
@click.option("--approver", "approver_id", default=None, help="A supervisor's staff id.")
@json_option
def settle_cmd(card: str, how: str, note: str, staff_id: str, approver_id: str | None) -> None:
    """Bring a flagged member's negative balance back to zero."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.ADJUST_POINTS)
    approver = _approver(app, approver_id)
    emit(
        corrections.settle_overdraft(app, card, how, note, staff, approver),
        lambda r: f"overdraft of {r.points} points settled ({r.reason}); balance {r.balance}",
    )


@points_group.command("refund")
@click.option("--receipt", "receipt_id", required=True, help="The original receipt's id.")
@click.option("--refund-id", required=True, help="The refund's own id (a resent one is ignored).")
@click.option("--amount-cents", required=True, type=NUMBER, help="Money returned, in cents.")
@json_option
def refund_cmd(receipt_id: str, refund_id: str, amount_cents: int) -> None:
    """Take back the points of (part of) a receipt whose money was returned."""

    def human(r: corrections.RefundResult) -> str:
        if r.duplicate:
            return f"refund {r.refund_id} was already booked ({r.points} points); nothing changed"
        owed = "; ATTENTION: the member owes points (flagged for staff)" if r.overdraft else ""
        return (
            f"-{r.points} points for refund {r.refund_id} of receipt {r.receipt_id}; "
            f"balance {r.balance}{owed}"
        )

    result = corrections.refund_purchase(
        state().app, receipt_id, refund_id, amount_cents, actor="console"
    )
    emit(result, human)


def register(group: click.Group) -> None:
    group.add_command(points_group)
