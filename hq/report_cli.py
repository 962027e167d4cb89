"""``kiosk hq report NAME`` prints one of HQ's reports (:mod:`hq.reports`) as a table, CSV or
JSON; ``kiosk hq reports rebuild`` works the reports' rollups out again from the ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from edge.console import show
from edge.domain.errors import InvalidInput
from edge.progress import Progress
from hq.audit import Actor
from hq.console import config_of
from hq.reports import REPORTS, Report, period, run_report
from hq.rollups import RebuildReport, rebuild_rollups


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report_text(report: Report[Any]) -> str:
    """The report as an aligned table under a line saying what it is."""
    where = f"store {report.store_id}" if report.store_id else "the chain"
    by = ", ".join(report.by) or "total"
    head = (
        f"{report.name} of {where}, {report.period.start} to {report.period.end} (UTC days), "
        f"by {by}: {len(report.rows):,} rows"
    )
    cells = [[_cell(v) for v in values] for values in report.table()]
    widths = [max([len(c), *(len(row[n]) for row in cells)]) for n, c in enumerate(report.columns)]
    numeric = [
        bool(report.rows) and isinstance(getattr(report.rows[0], c), int) for c in report.columns
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([head, line(list(report.columns)), *(line(row) for row in cells)])


@click.command("report")
@click.argument("name")
@click.option(
    "--from", "start", metavar="YYYY-MM-DD", help="First day (UTC); default 29 days before --to."
)
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day (UTC), included; default today.")
@click.option("--store", "store_id", help="One store only (default: the whole chain).")
@click.option(
    "--by",
    help="Comma-separated: day, store, tier (what the report may be by), or 'total'; "
    "default: points and checkins by day, gifts by store.",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def report_command(
    ctx: click.Context,
    name: str,
    start: str | None,
    end: str | None,
    store_id: str | None,
    by: str | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """Print an HQ report: points, outstanding, gifts, members or checkins (docs/hq.md says
    what each counts)."""
    from hq.service import open_hq_engine

    if as_csv and as_json:
        raise InvalidInput("--csv or --json, not both", code="bad_format")
    if name not in REPORTS:  # before the database opens
        raise InvalidInput(
            f"no report {name[:40]!r}: the reports are {', '.join(REPORTS)}", code="bad_report"
        )
    days = period(start, end)
    grouping = None
    if by is not None:
        parts = [p.strip() for p in by.split(",") if p.strip()]
        grouping = [] if parts == ["total"] else parts
    engine = open_hq_engine(config_of(ctx).database_url)
    try:
        with Session(engine) as session:
            report = run_report(session, name, days, store_id, grouping)
    finally:
        engine.dispose()
    if as_csv:
        click.echo(report.csv(), nl=False)
    elif as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True))
    else:
        click.echo(report_text(report))


@click.group("reports")
def reports_group() -> None:
    """The reports' rollups of the central ledger."""


def _rebuilt(r: RebuildReport) -> str:
    return (
        f"rebuilt the reports' rollups from {r.entries:,} ledger entries and {r.events:,} "
        f"events: {r.points_rows:,} points rows, {r.gift_rows:,} gift rows, {r.member_rows:,} "
        f"member rows; points outstanding {r.outstanding_before:,} -> {r.outstanding:,}, "
        f"members {r.members_before:,} -> {r.members:,}"
    )


@reports_group.command("rebuild")
@click.option("--actor", default=None, help="Who, for HQ's audit log (default: your login).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rebuild_command(ctx: click.Context, actor: str | None, as_json: bool) -> None:
    """Work the reports' rollups out again from the ledger, the events and the members, in
    one transaction (HQ's workers wait at their rollups meanwhile; reports read on)."""
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    bars: list[Progress] = []

    def started(total: int) -> None:
        bars.append(Progress("rebuilding the reports' rollups", total, "rows"))

    def advance(n: int) -> None:
        bars[0].advance(n)

    try:
        with Session(engine) as session, session.begin():
            result = rebuild_rollups(
                session, Actor.terminal(actor), datetime.now(UTC), advance, started=started
            )
    finally:
        for bar in bars:
            bar.finish()
        engine.dispose()
    show(result.as_dict(), as_json, _rebuilt(result))


def add_report_commands(group: click.Group) -> None:
    group.add_command(report_command)
    group.add_command(reports_group)
