"""``kiosk audit``, ``kiosk ledger verify`` and ``kiosk status``."""

from __future__ import annotations

from datetime import datetime

import click

from edge.cli.common import emit, json_option, state
from edge.console import NumberRange
from edge.domain.clock import ensure_utc
from edge.domain.text import escape_controls
from edge.services.status import AuditLine, CenterStatus, audit_log, center_status
from edge.services.verify import VerifyReport, verify_ledger


@click.command("audit")
@click.option("--since", "since_text", default=None, help="ISO time with zone.")
@click.option("--limit", default=1000, show_default=True, type=NumberRange(1, 1_000_000))
@json_option
def audit_cmd(since_text: str | None, limit: int) -> None:
    """The audit log (who did what, when)."""
    since = None
    if since_text is not None:
        try:
            since = ensure_utc(datetime.fromisoformat(since_text))
        except ValueError as exc:
            raise click.BadParameter(f"{since_text!r}: {exc}", param_hint="--since") from None

    def human(lines: list[AuditLine]) -> str:
        if not lines:
            return "no audit records"
        return "\n".join(  # one row a record, whatever text the record quotes
            escape_controls(
                f"{a.seq:>6}  {a.at:%Y-%m-%d %H:%M:%S}Z  {a.actor:<12} {a.action:<24} {a.subject}"
                + (f"  {a.detail}" if a.detail else "")
            )
            for a in lines
        )

    emit(audit_log(state().app, since, limit), human)


@click.group("ledger")
def ledger_group() -> None:
    """The points ledger."""


@ledger_group.command("verify")
@json_option
def verify_cmd() -> None:
    """Check every invariant; exits 1 on a breach."""
    report = verify_ledger(state().app)

    def human(r: VerifyReport) -> str:
        head = (
            f"{'OK' if r.ok else 'BREACH'}: {r.members} members, {r.entries} entries, "
            f"{r.lots} lots, {r.audit_records} audit records"
        )
        return "\n".join([head, *(f"  - {p}" for p in r.problems)])

    emit(report, human)
    if not report.ok:
        raise click.exceptions.Exit(1)


def render_status(s: CenterStatus) -> str:
    link = (
        "standalone (sync disabled)"
        if not s.sync_enabled
        else ("OFFLINE" if s.offline else "online")
        + f", last contact with HQ {s.hq_last_contact or 'never'}"
    )
    return "\n".join(
        [
            f"Member Center Kiosk {s.version}  store {s.store_id}  device {s.device_id}",
            f"data         {s.data_dir}",
            f"members      {s.members} ({s.active_cards} active cards)",
            f"points       {s.points_outstanding} outstanding",
            f"gifts        {s.gifts} offered"
            + (f"; low stock: {', '.join(s.low_stock)}" if s.low_stock else ""),
            f"HQ           {link}; {s.outbox_pending} events waiting",
            f"rules        {_rules_line(s)}",
            "staff        "
            + (
                f"HQ's list version {s.staff_list_version}"
                if s.staff_list_version
                else "no list from HQ for this store yet"
            ),
        ]
    )


def _rules_line(s: CenterStatus) -> str:
    r = s.rules
    now = f"HQ's version {r.in_force} in force" if r.in_force else "this device's own"
    if r.next_version is None or r.next_from is None:
        return now
    return f"{now}; version {r.next_version} from {r.next_from.isoformat()}"


@click.command("status")
@json_option
def status_cmd() -> None:
    """The member center at a glance."""
    emit(center_status(state().app), render_status)


def register(group: click.Group) -> None:
    group.add_command(audit_cmd)
    group.add_command(ledger_group)
    group.add_command(status_cmd)
