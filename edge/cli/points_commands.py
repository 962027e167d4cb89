"""``kiosk points``: accrue a purchase, check in, birthday bonus, expire."""

from __future__ import annotations

from datetime import datetime

import click

from edge.cli.common import emit, json_option, state
from edge.console import NUMBER
from edge.domain.clock import ensure_utc
from edge.lifecycle import busy
from edge.services import points


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


def register(group: click.Group) -> None:
    group.add_command(points_group)
