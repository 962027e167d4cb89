"""``--help`` works on every command and subcommand, whatever options a group requires."""

from __future__ import annotations

import click
from click.testing import CliRunner

from edge.cli.main import cli


def every_command(
    group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += every_command(command, click.Context(command, parent=ctx), (*path, name))
    return found


def test_help_works_on_every_subcommand():
    commands = every_command(cli, click.Context(cli))
    assert ("lane", "simulate") in commands and ("hq", "serve") in commands
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path


def test_a_lane_command_still_needs_its_store_and_lane():
    result = CliRunner().invoke(cli, ["lane", "simulate", "--cards", "2900000000018"])
    assert result.exit_code == 2
    assert "Missing option '--store'" in result.output
