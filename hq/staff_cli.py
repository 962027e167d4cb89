"""``kiosk hq staff ...``: the staff accounts of the chain's stores, managed at HQ.

Each change is saved, then the store's whole list is published, signed and retained, for
every kiosk of the store (one enrolled later gets it when it connects). PINs are read from
the terminal or one line of standard input, never from arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from edge.console import read_secret, show
from edge.domain.errors import ConfigError
from edge.domain.staff import parse_role
from edge.domain.text import escape_controls
from hq.audit import Actor
from hq.console import actor_option, config_of
from hq.service import HqConfig
from hq.staff import StaffChange, StaffDesk, StaffRow, check_staff_id, check_store

_store = click.option("--store", "store_id", required=True, help="The store, e.g. S001.")
_staff = click.option("--id", "staff_id", required=True, help="The staff id (as on the badge).")


def _desk(config: HqConfig) -> StaffDesk:
    from hq.service import open_hq_engine

    if not config.command_key:  # nothing is changed that could not be pushed
        raise ConfigError(
            "no command key to sign staff lists: pass --tls-dir or command_key in the config",
            code="no_command_key",
        )
    if not Path(config.command_key).is_file():
        raise ConfigError(f"no command key at {config.command_key}", code="no_command_key")
    return StaffDesk(open_hq_engine(config.database_url))


def _publish(config: HqConfig, desk: StaffDesk, store_id: str) -> int:
    """Publishes the store's latest list; the version published."""
    from hq.commands import push_staff_list

    staff_list = desk.staff_list(store_id)
    try:
        push_staff_list(config, staff_list)
    except ConnectionError as exc:
        raise click.ClickException(
            f"saved at HQ as staff list version {staff_list.version} of store {store_id}, but "
            f"not published ({exc}): run `kiosk hq staff publish --store {store_id}` when the "
            "broker is back"
        ) from None
    return staff_list.version


def _changed(ctx: click.Context, change_of: str, do: Callable[[StaffDesk], StaffChange]) -> None:
    """Runs a change (``do(desk)``), publishes the store's list and says so."""
    config = config_of(ctx)
    desk = _desk(config)
    try:
        change = do(desk)
        _publish(config, desk, change.store_id)
    finally:
        desk.engine.dispose()
    click.echo(
        f"staff {change.staff_id} of store {change.store_id}: {change_of}; staff list "
        f"version {change.version} published, signed"
    )


@click.group("staff")
def staff_group() -> None:
    """Staff accounts of the stores: kept at HQ, pushed signed to every kiosk of the store.

    Once a store has a list from HQ, only the accounts on it sign in at its kiosks; a
    disabled one is refused at its next PIN entry."""


@staff_group.command("add")
@_store
@_staff
@click.option("--role", required=True, help="clerk, supervisor or technician")
@click.option("--name", default="", help="Display name.")
@actor_option
@click.pass_context
def add_command(
    ctx: click.Context, store_id: str, staff_id: str, role: str, name: str, actor: Actor
) -> None:
    """Add a staff account to a store; its PIN is read from the prompt (or stdin)."""
    check_store(store_id)  # a bad store, id or role is said before the PIN is asked for
    check_staff_id(staff_id)
    parse_role(role)
    pin = read_secret(f"new PIN for {staff_id}", confirm=True)
    _changed(ctx, "added", lambda d: d.add(store_id, staff_id, role, pin, name, actor))


@staff_group.command("disable")
@_store
@_staff
@actor_option
@click.pass_context
def disable_command(ctx: click.Context, store_id: str, staff_id: str, actor: Actor) -> None:
    """Disable a staff account: refused at its next PIN entry on every kiosk of the store."""
    _changed(ctx, "disabled", lambda d: d.disable(store_id, staff_id, actor))


@staff_group.command("enable")
@_store
@_staff
@actor_option
@click.pass_context
def enable_command(ctx: click.Context, store_id: str, staff_id: str, actor: Actor) -> None:
    """Enable a disabled staff account again."""
    _changed(ctx, "enabled", lambda d: d.enable(store_id, staff_id, actor))


@staff_group.command("pin")
@_store
@_staff
@actor_option
@click.pass_context
def pin_command(ctx: click.Context, store_id: str, staff_id: str, actor: Actor) -> None:
    """Give a staff account a new PIN, read from the prompt (or stdin)."""
    check_store(store_id)  # a bad store or id is said before the PIN is asked for
    check_staff_id(staff_id)
    pin = read_secret(f"new PIN for {staff_id}", confirm=True)
    _changed(ctx, "new PIN", lambda d: d.set_pin(store_id, staff_id, pin, actor))


@staff_group.command("publish")
@_store
@click.pass_context
def publish_command(ctx: click.Context, store_id: str) -> None:
    """Publish the store's latest staff list again (after a broker outage, say)."""
    config = config_of(ctx)
    desk = _desk(config)
    try:
        version = _publish(config, desk, store_id)
    finally:
        desk.engine.dispose()
    click.echo(f"staff list version {version} of store {store_id} published, signed")


def _table(rows: list[StaffRow]) -> str:
    lines = [f"{'store':<8} {'staff':<12} {'role':<11} {'state':<9} {'updated':<17} name"]
    for r in rows:
        state = "active" if r.active else "disabled"
        lines.append(
            f"{r.store_id:<8} {r.staff_id:<12} {r.role:<11} {state:<9} "
            f"{r.updated_at:%Y-%m-%d %H:%M} {escape_controls(r.name)}"
        )
    return "\n".join(lines)


@staff_group.command("list")
@click.option("--store", "store_id", default=None, help="One store only.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, store_id: str | None, as_json: bool) -> None:
    """The staff accounts HQ keeps (never their PINs)."""
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    try:
        rows = StaffDesk(engine).accounts(store_id)
    finally:
        engine.dispose()
    show(rows, as_json, _table(rows))


def add_staff_commands(group: click.Group) -> None:
    group.add_command(staff_group)
