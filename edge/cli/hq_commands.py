"""``kiosk hq ...`` and ``kiosk lane ...``: HQ's reference service and the lane simulator.

The appliance core never imports HQ (an import-linter contract says so); HQ's commands live
in ``hq.cli`` and are offered here by name when the ``hq`` package is installed, the same way
``edge.cli.main`` loads every command module.
"""

from __future__ import annotations

import importlib

import click

HQ_CLI = "hq.cli"


def register(group: click.Group) -> None:
    try:
        module = importlib.import_module(HQ_CLI)
    except ModuleNotFoundError as exc:
        if exc.name != "hq" and not HQ_CLI.startswith(str(exc.name)):
            raise
        return
    module.register(group)
