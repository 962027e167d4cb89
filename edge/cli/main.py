"""Entry point of the ``kiosk`` command: global options, command groups, error reporting."""

from __future__ import annotations

import os
import sys
import traceback
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import click

from edge import __version__
from edge.cli import (
    audit_commands,
    card_commands,
    db_commands,
    gift_commands,
    hardware_commands,
    kiosk_commands,
    lifecycle_commands,
    member_commands,
    points_commands,
    shell,
    staff_commands,
    sync_commands,
)
from edge.cli.common import CliState, error_message, report_error
from edge.domain.errors import KioskError

# Each module exposes ``register(group)``; its heavy imports (OpenCV, Kivy) happen inside
# its commands so that ``kiosk points accrue`` starts fast.
COMMAND_MODULES = (
    db_commands,
    member_commands,
    points_commands,
    gift_commands,
    card_commands,
    staff_commands,
    audit_commands,
    shell,
    hardware_commands,
    sync_commands,
    lifecycle_commands,
    kiosk_commands,
)


PLUGIN_GROUP = "member_kiosk.commands"


class KioskGroup(click.Group):
    """The ``kiosk`` group: the core's commands, and those of packages installed beside it.

    Such a package names each of its commands in the ``member_kiosk.commands`` entry point
    (HQ's reference service adds ``hq`` and ``lane``). A plugin's command is imported only
    when it is asked for (or listed by ``--help``): ``kiosk points accrue`` never loads HQ.
    The core never imports the plugins' modules itself.
    """

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        plugin = self._plugins().get(cmd_name)
        if plugin is None:
            return None
        command = plugin.load()
        if not isinstance(command, click.Command):
            raise click.UsageError(f"the {cmd_name!r} command's package is broken")
        self.add_command(command, cmd_name)
        return command


@click.group(cls=KioskGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="kiosk")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KIOSK_DATA_DIR",
    help="Data directory (KIOSK_DATA_DIR; default ./var in a checkout, /var/lib/member-kiosk).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KIOSK_CONFIG",
    help="Configuration file (KIOSK_CONFIG; default config.toml in the data directory).",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def cli(
    ctx: click.Context, data_dir: Path | None, config_path: Path | None, json_output: bool
) -> None:
    """Member Center Kiosk: the member center's console for staff and technicians."""
    if ctx.obj is None:
        ctx.obj = CliState(data_dir, config_path, json_output)
        ctx.call_on_close(ctx.obj.close)


for _module in COMMAND_MODULES:
    _module.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; a refusal or bad input is one line on stderr and a non-zero exit."""
    try:
        result = cli.main(args=argv, prog_name="kiosk", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        report_error(exc.format_message())
        return exc.exit_code
    except KioskError as exc:
        report_error(error_message(exc))
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or a broken environment: one line, details on request
        if os.environ.get("KIOSK_DEBUG"):
            traceback.print_exc()
        report_error(f"internal error ({type(exc).__name__}: {exc}); set KIOSK_DEBUG=1 for details")
        return 70
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
