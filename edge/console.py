"""What every console of the project shares, the appliance's and HQ's: typed numbers and output.

``kiosk ...`` (edge.cli) and ``kiosk hq ...`` (hq.cli, which may not import edge.cli) read
the numbers a person types by one rule and print results the same way: JSON under
``--json``, else the command's human rendering.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from edge.domain.errors import InvalidInput
from edge.domain.text import fold_digits


class _TypedDigits(click.ParamType[int]):
    """Reads typed text by the digits rule (:func:`edge.domain.text.fold_digits`) first."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                value = fold_digits(value)
            except InvalidInput as exc:
                self.fail(exc.message, param, ctx)
        return super().convert(value, param, ctx)


class Number(_TypedDigits, click.types.IntParamType):
    """An integer option a person types: 0-9 or full-width ０-９, no other numerals."""


class NumberRange(_TypedDigits, click.IntRange):
    """:class:`Number` within bounds (as ``click.IntRange``)."""


NUMBER = Number()


def plain(value: Any) -> Any:
    """``value`` with dataclasses, messages, times and paths turned into what JSON holds."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def render(result: Any, as_json: bool, human: Callable[[Any], str] | str | None = None) -> str:
    """One line of JSON under ``--json``; else the human rendering (indented JSON if none)."""
    if as_json:
        return json.dumps(plain(result), ensure_ascii=False, sort_keys=True, default=str)
    if human is None:
        return json.dumps(plain(result), ensure_ascii=False, indent=2, sort_keys=True, default=str)
    return human if isinstance(human, str) else human(result)


def show(result: Any, as_json: bool, human: Callable[[Any], str] | str | None = None) -> None:
    """Prints :func:`render`'s text."""
    click.echo(render(result, as_json, human))


def read_secret(prompt: str, confirm: bool = False) -> str:
    """A PIN from the terminal (hidden), or one line of standard input when it is not a terminal.

    PINs are never taken from arguments: they would land in shell history and ``ps``.
    """
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput(f"{prompt}: expected a PIN on standard input")
    return line.rstrip("\r\n")
