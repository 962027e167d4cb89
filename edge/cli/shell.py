"""``kiosk shell``: the staff console's interactive shell."""

from __future__ import annotations

import shlex
import sys

import click

from edge.cli.common import error_message, report_error, state


def _dispatch(group: click.Group, line: str) -> None:
    from edge.domain.errors import KioskError

    try:
        args = shlex.split(line)
    except ValueError as exc:
        report_error(str(exc))
        return
    if not args:
        return
    if args[0] in ("shell", "run"):
        report_error("already in the shell")
        return
    root = click.get_current_context().find_root()
    try:
        with group.make_context("kiosk", args, parent=root, obj=root.obj) as sub:
            group.invoke(sub)
    except click.exceptions.Exit:
        pass
    except click.ClickException as exc:
        report_error(exc.format_message())
    except KioskError as exc:
        report_error(error_message(exc))
    finally:
        root.obj.json_output = False


def run_shell(group: click.Group) -> None:
    """Reads console commands (as typed after ``kiosk``) until EOF or ``exit``."""
    from edge.cli.audit_commands import render_status
    from edge.services.status import center_status

    interactive = sys.stdin.isatty()
    click.echo(render_status(center_status(state().app)))
    click.echo(
        "Type a command as you would after 'kiosk' (e.g. 'gift list'), "
        "'help' for the list, 'exit' to leave."
    )
    while True:
        if interactive:
            try:
                line = input("kiosk> ")
            except EOFError:
                click.echo()
                return
        else:
            raw = sys.stdin.readline()
            if not raw:
                return
            line = raw.strip()
        if line in ("exit", "quit"):
            return
        if line in ("help", "?"):
            click.echo(group.get_help(click.get_current_context().find_root()))
            continue
        _dispatch(group, line)


def register(group: click.Group) -> None:
    @group.command("shell")
    def shell_cmd() -> None:
        """The staff console's interactive shell."""
        run_shell(group)
