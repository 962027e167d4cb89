"""What HQ's commands share (``kiosk hq ...``): the HQ settings the group read, and who acts."""

from __future__ import annotations

from typing import Any

import click

from hq.audit import Actor
from hq.service import HqConfig


def config_of(ctx: click.Context) -> HqConfig:
    """The HQ settings ``kiosk hq`` read from its options and config file."""
    obj: dict[str, Any] = ctx.find_object(dict) or {}
    return obj["config"]  # type: ignore[no-any-return]


def _actor(ctx: click.Context, param: click.Parameter, value: str | None) -> Actor:
    return Actor.terminal(value)


actor_option = click.option(
    "--actor",
    default=None,
    callback=_actor,
    help="Who acts, for HQ's audit log (default: your login name).",
)
"""``--actor``, given to the command as an :class:`~hq.audit.Actor` (source ``cli``)."""
