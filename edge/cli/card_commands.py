"""``kiosk card``: report lost, replace."""

from __future__ import annotations

import click

from edge.cli.common import emit, json_option, state
from edge.cli.staff_auth import staff_login
from edge.domain.staff import Permission
from edge.services import cards


@click.group("card")
def card_group() -> None:
    """Membership cards."""


@card_group.command("lost")
@click.option("--card", required=True)
@click.option("--staff", "staff_id", required=True)
@json_option
def lost_cmd(card: str, staff_id: str) -> None:
    """Report a card lost: it is blocked here and at every lane."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.REPORT_LOST_CARD)
    emit(
        cards.report_lost_card(app, card, staff),
        lambda c: f"card {c.card_no} blocked as lost; balance {c.balance} is safe",
    )


@card_group.command("replace")
@click.option("--card", required=True)
@click.option("--staff", "staff_id", required=True)
@json_option
def replace_cmd(card: str, staff_id: str) -> None:
    """Issue a new card; the balance moves with it."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.REPLACE_CARD)
    emit(
        cards.replace_card(app, card, staff),
        lambda c: f"new card {c.new_card_no} replaces {c.card_no}; balance {c.balance}",
    )


def register(group: click.Group) -> None:
    group.add_command(card_group)
