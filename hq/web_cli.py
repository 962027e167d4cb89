"""``kiosk hq web`` (the console) and ``kiosk hq account ...`` (its accounts, at a terminal).

The first administrator is made here (``kiosk hq account add NAME --role admin``); after
that, administrators manage accounts on the console's Accounts page, which calls the same
functions (:mod:`hq.accounts`).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy.orm import Session

from edge.console import NUMBER, show
from edge.process import log_to_stderr
from hq import accounts
from hq.accounts import AccountRow
from hq.audit import Actor
from hq.console import actor_option, config_of
from hq.service import HqConfig

if TYPE_CHECKING:
    from hq.web.member_page import MemberPageSettings


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=NUMBER)
@click.option(
    "--secure-cookies/--no-secure-cookies",
    default=False,
    help="Mark cookies Secure: set it when the console is served over HTTPS (a TLS proxy).",
)
@click.option(
    "--device-broker-host",
    help="The broker address devices enrolled here connect to (default: HQ's --broker-host).",
)
@click.option("--device-broker-port", type=NUMBER, help="... and its port (default HQ's).")
@click.option(
    "--enrol-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where enrolment bundles are kept (default: enrolments/ beside the backups).",
)
@click.option(
    "--metrics-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the bearer token /metrics asks for (default: /metrics is open).",
)
@click.option(
    "--member-code-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="HQ's member-code key (default: hq-member-code.pem in HQ's TLS folder, from "
    "`kiosk hq member-code-key`).",
)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def web_command(
    ctx: click.Context,
    host: str,
    port: int,
    secure_cookies: bool,
    device_broker_host: str | None,
    device_broker_port: int | None,
    enrol_dir: Path | None,
    metrics_token_file: Path | None,
    member_code_key: Path | None,
    log_level: str,
) -> None:
    """Serve HQ's web console until SIGTERM (sign in with an account made by `kiosk hq
    account add`). With --tls-dir its enrolment desk signs devices' bundles."""
    import uvicorn

    from hq.catalogue import BrokerPublisher
    from hq.enrol import EnrolmentDesk, desk_settings
    from hq.service import open_hq_engine
    from hq.web.app import make_app
    from hq.web.core import Console

    log_to_stderr(log_level.upper())
    config = config_of(ctx)
    desk = None
    if config.ca_file:
        settings = desk_settings(
            ca_dir=Path(config.ca_file).parent,
            command_key=Path(config.command_key) if config.command_key else None,
            broker_host=device_broker_host or config.broker_host,
            broker_port=device_broker_port or config.broker_port,
        )
        desk = EnrolmentDesk(open_hq_engine(config.database_url), settings, source="web")
    console = Console(
        config,
        secure_cookies=secure_cookies,
        desk=desk,
        enrol_dir=enrol_dir,
        phone_lookup=_phone_lookup(config),
        publisher=BrokerPublisher(config) if config.command_key else None,
        metrics_token=metrics_token_file.read_text().strip() if metrics_token_file else "",
        member_page=member_page_settings(config, member_code_key),
    )
    with console.tx() as session:
        if not accounts.accounts(session):
            click.echo(
                "no console accounts yet: make the first with "
                "`kiosk hq account add NAME --role admin`",
                err=True,
            )
    uvicorn.run(
        make_app(console),
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=5,
        server_header=False,
    )


def member_page_settings(config: HqConfig, code_key: Path | None) -> MemberPageSettings:
    """What the member page signs in and shows codes with: the chain's lookup key and HQ's
    member-code key from HQ's TLS folder (or ``code_key``), and the sender HQ's config names
    (``sender`` in ``[messages]``, as for reminders)."""
    from edge.security.keys import load_private_key, load_secret
    from edge.security.personal import PhoneVault
    from hq.enrol import LOOKUP_KEY_FILE, MEMBER_CODE_KEY_FILE
    from hq.web.member_page import MemberPageSettings

    folder = Path(config.ca_file).parent if config.ca_file else None
    vault = None
    if folder is not None and (folder / LOOKUP_KEY_FILE).exists():
        vault = PhoneVault(config.data_key(), load_secret(folder / LOOKUP_KEY_FILE))
    if code_key is None and folder is not None and (folder / MEMBER_CODE_KEY_FILE).exists():
        code_key = folder / MEMBER_CODE_KEY_FILE
    coupon_key = None
    if config.command_key and Path(config.command_key).is_file():
        from hq.commands import load_command_key

        coupon_key = load_command_key(Path(config.command_key))
    for missing, what in (
        (vault is None, f"no chain lookup key ({LOOKUP_KEY_FILE} in HQ's TLS folder)"),
        (not config.messages.sender, "no message sender (sender in [messages] of HQ's config)"),
        (code_key is None, f"no member-code key ({MEMBER_CODE_KEY_FILE})"),
    ):
        if missing:
            click.echo(f"member page: {what}; what needs it is turned off", err=True)
    return MemberPageSettings(
        vault=vault,
        sender=config.messages.make_sender(),
        code_key=load_private_key(code_key) if code_key else None,
        coupon_key=coupon_key,
    )


def _phone_lookup(config: HqConfig) -> Callable[[str], str] | None:
    """The chain's phone lookup hash, when its key is in HQ's TLS folder."""
    from edge.security.keys import load_secret
    from edge.security.personal import PhoneVault
    from hq.enrol import LOOKUP_KEY_FILE

    if not config.ca_file:
        return None
    path = Path(config.ca_file).parent / LOOKUP_KEY_FILE
    if not path.exists():
        return None
    # Only the lookup half of the vault is used here: the members desk never opens a phone.
    return PhoneVault(secrets.token_bytes(32), load_secret(path)).lookup_hash


@click.group("account")
def account_group() -> None:
    """HQ staff's console accounts: add, list, role, disable, enable, password, unlock."""


def _session_do(ctx: click.Context, do: Callable[[Session, datetime], AccountRow]) -> AccountRow:
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    try:
        with Session(engine) as session, session.begin():
            return do(session, datetime.now(UTC))
    finally:
        engine.dispose()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _said(row: AccountRow, what: str) -> None:
    click.echo(f"{row.name} ({row.display_name}), {row.role.value}: {what}")


_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)


@account_group.command("add")
@click.argument("name")
@click.option(
    "--role", "role_text", required=True, help="viewer, operator, member_desk, supervisor or admin."
)
@click.option("--display-name", default="", help="The name the console shows (default NAME).")
@_stdin
@actor_option
@click.pass_context
def add_command(
    ctx: click.Context,
    name: str,
    role_text: str,
    display_name: str,
    password_stdin: bool,
    actor: Actor,
) -> None:
    """Make a console account."""
    role = accounts.parse_role(role_text)
    name = accounts.check_name(name)
    password = _password(password_stdin)
    row = _session_do(
        ctx,
        lambda s, now: accounts.create_account(s, name, display_name, role, password, actor, now),
    )
    _said(row, "created")


@account_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every console account (never a password)."""
    from hq.service import open_hq_engine

    engine = open_hq_engine(config_of(ctx).database_url)
    with Session(engine) as session:
        rows = accounts.accounts(session)
    engine.dispose()
    lines = [
        f"{r.name:<20} {r.role.value:<12} {'active' if r.active else 'disabled':<9} "
        f"{r.display_name}"
        + (f"  locked until {r.locked_until:%H:%M} UTC" if r.locked_until else "")
        for r in rows
    ]
    show([asdict(r) for r in rows], as_json, "\n".join(lines) or "no console accounts")


@account_group.command("role")
@click.argument("name")
@click.argument("role_text", metavar="ROLE")
@actor_option
@click.pass_context
def role_command(ctx: click.Context, name: str, role_text: str, actor: Actor) -> None:
    """Give NAME another role."""
    role = accounts.parse_role(role_text)
    row = _session_do(ctx, lambda s, now: accounts.change_account(s, name, actor, now, role=role))
    _said(row, "role set")


@account_group.command("disable")
@click.argument("name")
@actor_option
@click.pass_context
def disable_command(ctx: click.Context, name: str, actor: Actor) -> None:
    """Disable NAME (and end its sessions)."""
    row = _session_do(
        ctx,
        lambda s, now: accounts.change_account(s, name, actor, now, active=False),
    )
    _said(row, "disabled")


@account_group.command("enable")
@click.argument("name")
@actor_option
@click.pass_context
def enable_command(ctx: click.Context, name: str, actor: Actor) -> None:
    """Enable NAME again."""
    row = _session_do(
        ctx,
        lambda s, now: accounts.change_account(s, name, actor, now, active=True),
    )
    _said(row, "enabled")


@account_group.command("password")
@click.argument("name")
@_stdin
@actor_option
@click.pass_context
def password_command(ctx: click.Context, name: str, password_stdin: bool, actor: Actor) -> None:
    """Set NAME's password (its sessions end)."""
    password = _password(password_stdin)
    row = _session_do(ctx, lambda s, now: accounts.set_password(s, name, password, actor, now))
    _said(row, "password set")


@account_group.command("unlock")
@click.argument("name")
@actor_option
@click.pass_context
def unlock_command(ctx: click.Context, name: str, actor: Actor) -> None:
    """Lift NAME's lockout after wrong passwords."""
    row = _session_do(ctx, lambda s, now: accounts.unlock(s, name, actor, now))
    _said(row, "unlocked")


def add_web_commands(group: click.Group) -> None:
    group.add_command(web_command)
    group.add_command(account_group)
