"""What every console command shares: the app context, --json output, errors (PIN prompts
are :func:`edge.console.read_secret`, which HQ's console shares)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from edge.app import AppContext
from edge.console import show
from edge.domain.errors import DiskFull, KioskError
from edge.domain.text import escape_controls

F = TypeVar("F", bound=Callable[..., Any])

# The command line of the command running (``kiosk member register``), for its errors.
_RUNNING: ContextVar[str] = ContextVar("kiosk_command", default="")


class CliState:
    """Global options, and the app context built from them on first use."""

    def __init__(self, data_dir: Path | None, config_path: Path | None, json_output: bool) -> None:
        self.data_dir = data_dir
        self.config_path = config_path
        self.json_output = json_output
        self._app: AppContext | None = None

    @property
    def app(self) -> AppContext:
        if self._app is None:
            self._app = AppContext.open(data_dir=self.data_dir, config_path=self.config_path)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None


def report_error(message: str) -> None:
    """Prints a failed command's message as the console does every error: ``error: ...`` on
    stderr, one line, control characters escaped (it may quote an argument or a scanned code).
    """
    click.echo(f"error: {escape_controls(message)}", err=True)


def error_message(exc: KioskError) -> str:
    """What the console says for a refused command: the error's message, and for a full disk
    that the command itself was not done (the storage that found the disk full cannot know
    which command it was)."""
    command = _RUNNING.get()
    if isinstance(exc, DiskFull) and not exc.specific and command:
        return exc.saying(f"{command} was not done").message
    return exc.message


def state() -> CliState:
    ctx = click.get_current_context()
    root = ctx.find_root()
    names = []
    while ctx.parent is not None and ctx.command is not root.command:  # the shell nests one
        names.append(ctx.info_name or ctx.command.name or "")
        ctx = ctx.parent
    _RUNNING.set(" ".join(["kiosk", *reversed(names)]))
    return cast(CliState, root.obj)


def json_option(func: F) -> F:
    """Adds ``--json`` to a command (the global ``kiosk --json`` works too)."""

    @click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON output.")
    @functools.wraps(func)
    def wrapper(*args: Any, json_output: bool, **kwargs: Any) -> Any:
        if json_output:
            state().json_output = True
        return func(*args, **kwargs)

    return cast(F, wrapper)


def emit(result: Any, human: Callable[[Any], str] | str | None = None) -> None:
    """Prints ``result`` as JSON under ``--json``, else its human rendering."""
    show(result, state().json_output, human)
