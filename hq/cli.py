"""HQ's console: ``kiosk hq ...`` (serve, fleet, commands, updates, enrolment), ``kiosk lane``."""

from __future__ import annotations

import json
import random
import secrets
import signal
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edge.console import NUMBER, NumberRange, show
from edge.domain.errors import InvalidInput
from edge.domain.text import escape_controls, fold_digits
from edge.process import log_to_stderr, settle_heap
from edge.protocol import Message, ProtocolError
from hq.audit import Actor
from hq.campaign_cli import add_campaign_commands
from hq.catalogue_cli import add_catalogue_commands
from hq.console import actor_option, config_of
from hq.enrol_cli import add_enrol_commands
from hq.import_cli import add_import_commands
from hq.member_cli import add_member_commands
from hq.messages_cli import add_messages_commands
from hq.personal import DATA_KEY_FILE
from hq.report_cli import add_report_commands
from hq.rollout_cli import add_rollout_commands
from hq.service import HqConfig, load_hq_config
from hq.staff_cli import add_staff_commands
from hq.web_cli import add_web_commands

M = TypeVar("M", bound=Message)

if TYPE_CHECKING:
    from edge.protocol import Command, CommandResult


def _tls_paths(tls_dir: Path | None, cn: str) -> dict[str, str | None]:
    if tls_dir is None:
        return {}
    return {
        "ca_file": str(tls_dir / "ca.crt"),
        "cert_file": str(tls_dir / f"{cn}.crt"),
        "key_file": str(tls_dir / f"{cn}.key"),
    }


@click.group("hq")
@click.option("--hq-config", type=click.Path(dir_okay=False, path_type=Path), envvar="HQ_CONFIG")
@click.option("--db", "database_url", envvar="HQ_DATABASE_URL", help="SQLAlchemy URL.")
@click.option("--broker-host", envvar="HQ_BROKER_HOST")
@click.option("--broker-port", type=NUMBER, envvar="HQ_BROKER_PORT")
@click.option(
    "--client-id",
    envvar="HQ_CLIENT_ID",
    help="This HQ worker's MQTT client id: stable, and different for each worker (default hq).",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HQ_TLS_DIR",
    help="Directory with ca.crt, hq.crt, hq.key and hq-command.key.",
)
@click.option(
    "--data-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HQ_DATA_KEY",
    help="HQ's data key, which seals members' personal data (default: hq-data.key in "
    "--tls-dir when it is there).",
)
@click.option(
    "--backup-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HQ_BACKUP_DIR",
    help="Where devices' backups are kept (default: backups/ beside a SQLite database).",
)
@click.option(
    "--backups-keep",
    type=NumberRange(1, 1000),
    envvar="HQ_BACKUPS_KEEP",
    help="Backups kept per device (default 14).",
)
@click.option(
    "--bundle-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HQ_BUNDLE_DIR",
    help="Where uploaded update bundles are kept (default: bundles/ beside a SQLite database).",
)
@click.option(
    "--bundle-base-url",
    envvar="HQ_BUNDLE_BASE_URL",
    help="Where the devices fetch HQ's bundles ({URL}/bundles/{sha256}.bundle).",
)
@click.pass_context
def hq_group(
    ctx: click.Context,
    hq_config: Path | None,
    database_url: str | None,
    broker_host: str | None,
    broker_port: int | None,
    client_id: str | None,
    tls_dir: Path | None,
    data_key: Path | None,
    backup_dir: Path | None,
    backups_keep: int | None,
    bundle_dir: Path | None,
    bundle_base_url: str | None,
) -> None:
    """HQ's reference service: central ledger, fleet monitor, pushes and signed commands."""
    extra: dict[str, Any] = _tls_paths(tls_dir, "hq")
    if tls_dir is not None:
        extra["command_key"] = str(tls_dir / "hq-command.key")
        if (tls_dir / "hq-update.pub").exists():
            extra["update_key"] = str(tls_dir / "hq-update.pub")
        if data_key is None and (tls_dir / DATA_KEY_FILE).exists():
            data_key = tls_dir / DATA_KEY_FILE
    if data_key is not None:
        extra["data_key_file"] = str(data_key)
    config = load_hq_config(
        hq_config,
        database_url=database_url,
        broker_host=broker_host,
        broker_port=broker_port,
        client_id=client_id,
        backup_dir=str(backup_dir) if backup_dir is not None else None,
        backups_keep=backups_keep,
        bundle_dir=str(bundle_dir) if bundle_dir is not None else None,
        bundle_base_url=bundle_base_url,
        **extra,
    )
    ctx.obj = {"config": config}


@hq_group.command("serve")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def serve(ctx: click.Context, log_level: str) -> None:
    """Run HQ until SIGTERM: ingest, acknowledge, fan out, reconcile, watch the fleet."""
    from hq.service import HqService

    log_to_stderr(log_level)
    service = HqService(config_of(ctx))

    def _stop(signum: int, frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settle_heap()
    service.run()


@hq_group.group("db")
def db_group() -> None:
    """HQ's database schema (its own Alembic migrations)."""


@db_group.command("upgrade")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Bring HQ's database schema up to date, in one transaction (safe to run any time;
    back the database up first). Run it before starting a new version's workers."""
    from hq.schema import upgrade
    from hq.service import make_hq_engine

    config = config_of(ctx)
    engine = make_hq_engine(config.database_url)
    try:
        before, after = upgrade(engine, vault=config.personal_vault)
    finally:
        engine.dispose()
    show(
        {"before": before, "after": after, "changed": before != after},
        as_json,
        f"HQ schema {before or '(empty)'} -> {after}"
        if before != after
        else f"HQ schema {after} (up to date)",
    )


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Say which schema revision HQ's database is at and which one this HQ needs."""
    from hq.schema import HQ_SCHEMA
    from hq.service import make_hq_engine

    engine = make_hq_engine(config_of(ctx).database_url)
    try:
        current = HQ_SCHEMA.current_revision(engine)
    finally:
        engine.dispose()
    head = HQ_SCHEMA.head_revision()
    show(
        {"current": current, "needed": head, "up_to_date": current == head},
        as_json,
        f"HQ schema {current or '(empty)'}, this HQ needs {head}"
        + ("" if current == head else ": run `kiosk hq db upgrade`"),
    )


@hq_group.command("fleet")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fleet_command(ctx: click.Context, as_json: bool) -> None:
    """Every device (online, last seen, health, outbox, version, newest backup at HQ,
    faults) and open alerts."""
    from sqlalchemy.orm import Session

    from hq.backups import BackupStore
    from hq.fleet import fleet
    from hq.service import open_hq_engine

    config = config_of(ctx)
    engine = open_hq_engine(config.database_url)
    backups = BackupStore(config.backups_path(), config.backups_keep)
    if not backups.root.is_dir():
        click.echo(
            f"note: no backups folder at {backups.root.resolve()} (see --backup-dir); "
            "'-' under 'backup at HQ' means none found there",
            err=True,
        )
    with Session(engine) as session, session.begin():
        devices, alerts = fleet(
            session, datetime.now(UTC), timedelta(seconds=config.offline_alert_s), backups
        )
    engine.dispose()
    lines = [
        f"{'device':<12} {'store':<8} {'role':<6} {'state':<8} {'last seen':<20} "
        f"{'health':<9} {'outbox':>7} {'version':<8} {'backup at HQ':<17} faults"
    ]
    for d in devices:
        seen = d.last_seen.strftime("%Y-%m-%d %H:%M:%S") if d.last_seen else "-"
        depth = "-" if d.outbox_depth is None else str(d.outbox_depth)
        backup = d.last_backup_at.strftime("%Y-%m-%d %H:%M") if d.last_backup_at else "-"
        lines.append(
            f"{d.device_id:<12} {d.store_id:<8} {d.role:<6} {d.state:<8} {seen:<20} "
            f"{d.health:<9} {depth:>7} {d.version:<8} {backup:<17} {', '.join(d.faults) or '-'}"
        )
    lines.append("")
    lines.append(f"alerts ({len(alerts)} open)")
    for a in alerts:
        lines.append(f"  [{a.kind}] {a.subject}: {a.detail} (since {a.raised_at:%H:%M:%S})")
    show(
        {"devices": [asdict(d) for d in devices], "alerts": [asdict(a) for a in alerts]},
        as_json,
        "\n".join(escape_controls(line) for line in lines),  # faults and alerts come from devices
    )


def _check_transaction(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from edge.protocol import check_name

    if value is None:
        return None
    try:
        return check_name(value)
    except ValueError:
        raise click.BadParameter(
            "1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        ) from None


_TRANSACTION_HELP = (
    "Resend the command that transaction ran (or is running): the device answers from its "
    "record instead of running it again."
)


def _send(config: HqConfig, signed: Command, wait: int) -> CommandResult:
    """The device's result; no answer in ``wait`` seconds is one line saying how to read it."""
    from hq.commands import send_command

    try:
        return send_command(config, signed, timeout_s=wait)
    except TimeoutError:
        raise click.ClickException(
            f"no answer from {signed.device_id} in {wait} s; run the same command again with "
            f"--transaction {signed.transaction} to read its result (a device that ran it "
            "answers from its record, one still at it answers when done, one that never got "
            "it runs it then)"
        ) from None
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None


def _typed_int(value: str) -> str | int:
    """A command argument as typed: a number if it is one by the digits rule, else the text."""
    try:
        folded = fold_digits(value)
    except InvalidInput:
        return value
    return int(folded) if folded.isascii() and folded.isdigit() else value


@hq_group.command("command")
@click.argument("device_id")
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option(
    "--ttl", default=300, show_default=True, type=NUMBER, help="Seconds the command stays valid."
)
@click.option(
    "--wait",
    default=30,
    show_default=True,
    type=NUMBER,
    help="Seconds to wait for the device's answer.",
)
@click.option("--transaction", callback=_check_transaction, help=_TRANSACTION_HELP)
@click.pass_context
def command(
    ctx: click.Context,
    device_id: str,
    name: str,
    args: tuple[str, ...],
    ttl: int,
    wait: int,
    transaction: str | None,
) -> None:
    """Send a signed command (ARGS as key=value) and print the device's result."""
    from hq.commands import load_command_key, sign_command

    config = config_of(ctx)
    if not config.command_key:
        raise click.UsageError("no command key: pass --tls-dir or command_key in the config")
    parsed: dict[str, str | int | bool] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise click.UsageError(f"expected key=value, got {arg!r}")
        parsed[key] = _typed_int(value)
    signed = sign_command(
        load_command_key(Path(config.command_key)),
        device_id,
        name,
        parsed,
        timedelta(seconds=ttl),
        transaction=transaction,
    )
    result = _send(config, signed, wait)
    show(result.model_dump(mode="json"), True, "")


@hq_group.command("update")
@click.argument("device_id")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="Where the device fetches BUNDLE (http or https).")
@click.option(
    "--ttl", default=300, show_default=True, type=NUMBER, help="Seconds the command stays valid."
)
@click.option(
    "--wait",
    default=1000,
    type=NUMBER,
    show_default=True,
    help="Seconds to wait for the device's answer (its download may take up to 900 s).",
)
@click.option("--transaction", callback=_check_transaction, help=_TRANSACTION_HELP)
@click.option(
    "--allow-downgrade-from",
    metavar="VERSION",
    help="A rollback: let BUNDLE's older version replace VERSION, the one DEVICE_ID runs.",
)
@click.pass_context
def update_command(
    ctx: click.Context,
    device_id: str,
    bundle: Path,
    url: str,
    ttl: int,
    wait: int,
    transaction: str | None,
    allow_downgrade_from: str | None,
) -> None:
    """Tell DEVICE_ID to fetch the signed update BUNDLE from --url and queue it for its
    installer; prints the device's result (exit 1 unless it queued the bundle)."""
    from hq.commands import load_command_key
    from hq.commands import update_command as signed_update

    config = config_of(ctx)
    if not config.command_key:
        raise click.UsageError("no command key: pass --tls-dir or command_key in the config")
    try:
        signed = signed_update(
            load_command_key(Path(config.command_key)),
            device_id,
            bundle,
            url,
            timedelta(seconds=ttl),
            transaction=transaction,
            allow_downgrade_from=allow_downgrade_from,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = _send(config, signed, wait)
    show(result.model_dump(mode="json"), True, "")
    if result.status != "done":
        raise click.exceptions.Exit(1)


@hq_group.command("push-catalogue")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--note", default="", help="Why, for the history (one line).")
@actor_option
@click.pass_context
def push_catalogue_command(ctx: click.Context, path: Path, note: str, actor: Actor) -> None:
    """Save the whole gift catalogue (JSON: gifts; optional version) as HQ's next version
    and publish it, signed and retained, for every kiosk; a gift's "picture_file" (a PNG or
    JPEG, relative to the JSON's folder) goes with it. The same as `catalogue push`."""
    from hq.catalogue_cli import push_catalogue_file

    push_catalogue_file(ctx, path, None, note, actor)


@hq_group.command("push-rules")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--note", default="", help="Why, for the history (one line).")
@actor_option
@click.pass_context
def push_rules_command(ctx: click.Context, path: Path, note: str, actor: Actor) -> None:
    """Save the chain's rules (JSON: points, offline; optional version, effective_from,
    member_days, tiers) as HQ's next version and publish them, signed and retained. The same
    as `rules push`."""
    from hq.catalogue_cli import push_rules_file

    push_rules_file(ctx, path, None, note, actor)


@hq_group.command("block")
@click.argument("cards", nargs=-1, required=True)
@click.option("--reason", default="hq")
@click.option(
    "--ttl", default=7 * 24 * 3600, show_default=True, type=NUMBER, help="Seconds it stays valid."
)
@actor_option
@click.pass_context
def block(ctx: click.Context, cards: tuple[str, ...], reason: str, ttl: int, actor: Actor) -> None:
    """Publish a blocklist update for CARDS to every kiosk and lane (and record it in HQ's
    audit log)."""
    from sqlalchemy.orm import Session

    from edge.protocol import BlocklistUpdate, Topics
    from hq import audit
    from hq.commands import publish_once
    from hq.service import open_hq_engine

    config = config_of(ctx)
    now = datetime.now(UTC)
    update = BlocklistUpdate(
        update_id=f"hq-{secrets.token_hex(6)}",
        add=list(cards),
        reason=reason,
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    engine = open_hq_engine(config.database_url)  # a database it cannot record in: not sent
    try:
        with Session(engine) as session, session.begin():
            audit.record(
                session,
                actor,
                "card.block",
                update.update_id,
                now,
                after={"cards": list(cards), "reason": reason, "expires_at": update.expires_at},
            )
            # committed only once sent: a broker out of reach leaves no record of a block
            publish_once(config, Topics(config.topic_prefix).blocklist(), update, expiry_s=ttl)
    finally:
        engine.dispose()
    click.echo(f"blocklist update {update.update_id}: {len(cards)} card(s)")


@click.group("lane")
@click.option("--broker-host", default="127.0.0.1", show_default=True, envvar="LANE_BROKER_HOST")
@click.option(
    "--broker-port", default=8883, show_default=True, type=NUMBER, envvar="LANE_BROKER_PORT"
)
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), envvar="LANE_TLS_DIR")
@click.option("--store", "store_id", help="Store id (required).")
@click.option("--lane", "lane_id", help="Lane id, its certificate's CN (required).")
@click.option(
    "--cards-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LANE_CARDS_FILE",
    help="Keep the lane's card list here between runs (else it starts empty).",
)
@click.pass_context
def lane_group(
    ctx: click.Context,
    broker_host: str,
    broker_port: int,
    tls_dir: Path | None,
    store_id: str | None,
    lane_id: str | None,
    cards_file: Path | None,
) -> None:
    """A simulated checkout lane."""
    ctx.obj = {
        "host": broker_host,
        "port": broker_port,
        "tls_dir": tls_dir,
        "cards_file": cards_file,
        "store": store_id,
        "lane": lane_id,
    }


def _lane(ctx: click.Context) -> Any:
    """The lane the group's options describe; checked here, not by click, so that every
    subcommand's ``--help`` works without them."""
    from edge.protocol.link import TlsFiles
    from hq.lanes import Lane

    o = ctx.obj
    for option, key in (("--store", "store"), ("--lane", "lane")):
        if not o[key]:
            raise click.UsageError(f"Missing option '{option}'.", ctx)
    tls = None
    if o["tls_dir"] is not None:
        d = o["tls_dir"]
        tls = TlsFiles(d / "ca.crt", d / f"{o['lane']}.crt", d / f"{o['lane']}.key")
    return Lane(o["store"], o["lane"], o["host"], o["port"], tls, cards_file=o["cards_file"])


@lane_group.command("simulate")
@click.option("--cards", required=True, help="Comma-separated member card numbers.")
@click.option("--count", default=100, show_default=True, type=NUMBER)
@click.option("--rate", default=10.0, show_default=True, help="Purchases per second.")
@click.option("--seed", type=NUMBER, default=None)
@click.pass_context
def simulate(ctx: click.Context, cards: str, count: int, rate: float, seed: int | None) -> None:
    """Publish COUNT purchases at RATE for the cards, resending each until it is answered."""
    card_list = [c.strip() for c in cards.split(",") if c.strip()]
    with _lane(ctx) as lane:
        report = lane.simulate(card_list, count, rate, rng=random.Random(seed))
    summary = {k: v for k, v in asdict(report).items() if k not in ("receipts", "prices")}
    click.echo(json.dumps(summary, sort_keys=True))


@lane_group.command("coupon")
@click.argument("code")
@click.option("--check-only", is_flag=True, help="Validate without spending it.")
@click.option(
    "--basket-cents",
    type=NUMBER,
    default=None,
    help="The basket it is used on: spent only if it applies (满减), with what comes off.",
)
@click.pass_context
def coupon(ctx: click.Context, code: str, check_only: bool, basket_cents: int | None) -> None:
    """Check (and by default spend) a printed coupon with the store's kiosk."""
    if basket_cents is not None and basket_cents < 0:
        raise click.BadParameter("a basket cannot be negative", param_hint="--basket-cents")
    try:
        with _lane(ctx) as lane:
            if basket_cents is None or check_only:
                result = lane.check_coupon(code, use=not check_only)
                click.echo(result.model_dump_json())
                return
            result, off = lane.take_coupon(code, basket_cents)
    except TimeoutError as exc:
        raise click.ClickException(f"the store's kiosk did not answer: {exc}") from None
    shown = result.model_dump(mode="json")
    shown.update(basket_cents=basket_cents, discount_cents=off, pay_cents=basket_cents - off)
    click.echo(json.dumps(shown, ensure_ascii=False, sort_keys=True))


@lane_group.command("refund")
@click.option("--receipt", "receipt_id", required=True, help="The original receipt's id.")
@click.option("--amount-cents", required=True, type=NUMBER, help="Money returned, in cents.")
@click.option("--refund-id", default=None, help="The refund's id (default: a new one).")
@click.pass_context
def refund(ctx: click.Context, receipt_id: str, amount_cents: int, refund_id: str | None) -> None:
    """Return money on a receipt: the store's kiosk takes back the points it earned."""

    try:
        with _lane(ctx) as lane:
            result = lane.refund(receipt_id, amount_cents, refund_id)
    except (ProtocolError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    except TimeoutError as exc:
        raise click.ClickException(f"the store's kiosk did not answer: {exc}") from None
    click.echo(result.model_dump_json())


# ``kiosk hq`` and ``kiosk lane`` are named in the ``member_kiosk.commands`` entry point;
# the ``kiosk`` command imports this module only when one of them is asked for.
for _add in (
    add_enrol_commands,
    add_import_commands,
    add_staff_commands,
    add_web_commands,
    add_campaign_commands,
    add_member_commands,
    add_catalogue_commands,
    add_rollout_commands,
    add_report_commands,
    add_messages_commands,
):
    _add(hq_group)
