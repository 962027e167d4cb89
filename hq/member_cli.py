"""``kiosk hq member ...``: corrections to the chain's member records made at HQ.

``merge`` makes two member records of one person one (合并会员, :mod:`hq.merges`); every
store that holds either gets the change through its feed on its kiosks' next request.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
from sqlalchemy.orm import Session

from edge.console import show
from edge.domain.ids import IdFactory
from edge.domain.merges import OldCards
from hq.console import config_of
from hq.merges import MergeReport, merge_members


@click.group("member")
def member_group() -> None:
    """Corrections to member records at HQ (merge two records of one person)."""


def _text(r: MergeReport) -> str:
    cards = ", ".join(r.cards) or "none"
    state = "blocked" if r.old_cards == OldCards.BLOCK else "kept working"
    owed = "; owes points (overdraft flagged)" if r.overdraft else ""
    return (
        f"merge {r.merge_id}: member {r.absorbed_member_id} merged into {r.kept_member_id}; "
        f"{r.points} points moved, balance now {r.kept_balance}{owed}; old cards {cards} "
        f"{state}; {r.lots} lots and {r.coupons} coupons moved; stores told: "
        f"{', '.join(r.stores)}"
    )


@member_group.command("merge")
@click.option("--keep", required=True, help="The record that stays: a card number or member id.")
@click.option(
    "--absorb", required=True, help="The record merged into it: a card number or member id."
)
@click.option(
    "--old-cards",
    required=True,
    type=click.Choice([c.value for c in OldCards]),
    help="The absorbed record's cards: keep them working (as the kept member's) or block them.",
)
@click.option("--note", default=None, help="Why (required): one line, for the record.")
@click.option("--actor", default="hq", show_default=True, help="Who, for the record.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def merge_command(
    ctx: click.Context,
    keep: str,
    absorb: str,
    old_cards: str,
    note: str | None,
    actor: str,
    as_json: bool,
) -> None:
    """Merge two member records of one person: points, lots, cards, coupons and history go
    to the kept record, at HQ and at every store that holds either."""
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    try:
        with Session(engine) as session, session.begin():
            report = merge_members(
                session,
                keep,
                absorb,
                OldCards(old_cards),
                note,
                actor,
                datetime.now(UTC),
                IdFactory(),
            )
    finally:
        engine.dispose()
    show(report.as_dict(), as_json, _text(report))


def add_member_commands(group: click.Group) -> None:
    group.add_command(member_group)
