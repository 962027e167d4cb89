"""``kiosk staff``: add staff members."""

from __future__ import annotations

import click

from edge.cli.common import emit, json_option, state
from edge.cli.staff_auth import staff_login
from edge.console import read_secret
from edge.domain.staff import Permission
from edge.services import staff as staff_service


@click.group("staff")
def staff_group() -> None:
    """Staff members and their roles."""


@staff_group.command("add")
@click.option("--id", "staff_id", required=True)
@click.option("--role", required=True, help="clerk, supervisor or technician")
@click.option("--name", default="", help="Display name.")
@click.option(
    "--by",
    "by_id",
    default=None,
    help="Supervisor authorising this (required once any staff exists).",
)
@json_option
def add_cmd(staff_id: str, role: str, name: str, by_id: str | None) -> None:
    """Add a staff member; their PIN is read from the prompt (or stdin)."""
    app = state().app
    by = staff_login(app, by_id, Permission.MANAGE_STAFF) if by_id else None
    pin = read_secret(f"new PIN for {staff_id}", confirm=True)
    ident = staff_service.add_staff(app, staff_id, role, pin, name, by)
    emit(ident, lambda s: f"staff {s.staff_id} added as {s.role}")


@staff_group.command("login")
@click.option("--id", "staff_id", required=True)
@json_option
def login_cmd(staff_id: str) -> None:
    """Check a staff PIN (counts towards the lockout like any sign-in)."""
    app = state().app
    pin = read_secret(f"PIN for {staff_id}")
    emit(
        staff_service.authenticate_staff(app, staff_id, pin),
        lambda s: f"ok: {s.staff_id} ({s.role})",
    )


def register(group: click.Group) -> None:
    group.add_command(staff_group)
