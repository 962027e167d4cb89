"""What HQ's commands share (``kiosk hq ...``): the HQ settings the group read."""

from __future__ import annotations

from typing import Any

import click

from hq.service import HqConfig


def config_of(ctx: click.Context) -> HqConfig:
    """The HQ settings ``kiosk hq`` read from its options and config file."""
    obj: dict[str, Any] = ctx.find_object(dict) or {}
    return obj["config"]  # type: ignore[no-any-return]
