"""``kiosk hq enrol | move | replace | revoke | devices | enrolments | crl | enrol-key |
lookup-key | contact-key``: HQ's enrolment desk on the console.

The desk signs with the broker CA in ``--ca-dir`` (default: the directory of the HQ
configuration's ``ca_file``, i.e. ``--tls-dir``), issues bundles signed with HQ's enrolment
key (``--enrol-key``, default ``<ca dir>/hq-enrol.key``) carrying HQ's command and update
public keys and the chain's phone-lookup key (``--lookup-key``, default
``<ca dir>/hq-lookup.key``, sealed to each device), and tells devices to connect to
``--device-broker-host``/``--device-broker-port`` (default: HQ's own broker settings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from edge.console import NUMBER, NumberRange, show
from hq.audit import Actor
from hq.console import actor_option, config_of
from hq.contact_key import CONTACT_KEY_FILE, write_contact_key
from hq.enrol import (
    LOOKUP_KEY_FILE,
    MEMBER_CODE_KEY_FILE,
    EnrolmentDesk,
    Issued,
    desk_settings,
    read_qr_photo,
    write_enrol_key,
    write_lookup_key,
    write_member_code_key,
)
from hq.service import open_hq_engine

F = TypeVar("F", bound=Callable[..., Any])


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


# for every desk command; the commands that only read the record or sign the CRL take no other
_ca_option = click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HQ_CA_DIR",
    help="The broker CA (ca.crt, ca.key); default: where the HQ config's ca_file is.",
)


def _issue_options(func: F) -> F:
    """For the commands that issue a bundle (enrol, move, replace)."""
    return _apply(
        func,
        [
            _ca_option,
            click.option(
                "--enrol-key",
                type=click.Path(dir_okay=False, path_type=Path),
                envvar="HQ_ENROL_KEY",
                help="HQ's enrolment signing key (default: <ca dir>/hq-enrol.key).",
            ),
            click.option(
                "--lookup-key",
                type=click.Path(dir_okay=False, path_type=Path),
                envvar="HQ_LOOKUP_KEY",
                help="The chain's phone-lookup key, sealed into every bundle (default: "
                "<ca dir>/hq-lookup.key, made on the first enrolment if no device has one yet).",
            ),
            click.option(
                "--command-key",
                type=click.Path(dir_okay=False, path_type=Path),
                envvar="HQ_COMMAND_KEY",
                help="HQ's command key (default: the HQ config's, else <ca dir>/hq-command.key).",
            ),
            click.option(
                "--update-key",
                type=click.Path(dir_okay=False, path_type=Path),
                envvar="HQ_UPDATE_KEY",
                help="HQ's update key, public or private (default: <ca dir>/hq-update.pub).",
            ),
            click.option(
                "--device-broker-host",
                envvar="HQ_DEVICE_BROKER_HOST",
                help="Broker the devices connect to (default: HQ's broker host).",
            ),
            click.option(
                "--device-broker-port",
                type=NUMBER,
                envvar="HQ_DEVICE_BROKER_PORT",
                help="Its port (default: HQ's broker port).",
            ),
            click.option("--rules-version", default="", envvar="HQ_RULES_VERSION"),
            click.option("--catalogue-version", default="", envvar="HQ_CATALOGUE_VERSION"),
            click.option(
                "--range-size",
                type=NumberRange(1, 10**9),
                default=50_000,
                show_default=True,
                help="Card serials a new device gets.",
            ),
            actor_option,
        ],
    )


def _desk(ctx: click.Context, opts: dict[str, Any], *, signs: bool = True) -> EnrolmentDesk:
    """The desk; ``signs``: the command signs (so the CA must be named)."""
    config = config_of(ctx)
    ca_dir: Path | None = opts.get("ca_dir")
    if ca_dir is None:
        if config.ca_file:
            ca_dir = Path(config.ca_file).parent
        elif signs:
            raise click.UsageError("name the broker CA with --ca-dir (or --tls-dir on kiosk hq)")
        else:
            ca_dir = Path.cwd()
    settings = desk_settings(
        ca_dir=ca_dir,
        command_key=opts.get("command_key")
        or (Path(config.command_key) if config.command_key else None),
        enrol_key=opts.get("enrol_key"),
        update_key=opts.get("update_key"),
        broker_host=opts.get("device_broker_host") or config.broker_host,
        broker_port=opts.get("device_broker_port") or config.broker_port,
        rules_version=opts.get("rules_version") or "",
        catalogue_version=opts.get("catalogue_version") or "",
        card_range_size=opts.get("range_size") or 50_000,
        lookup_key=opts.get("lookup_key"),
    )
    return EnrolmentDesk(open_hq_engine(config.database_url), settings)


def _slip_text(qr_text: str | None, photo: Path | None) -> str:
    if (qr_text is None) == (photo is None):
        raise click.UsageError("give the slip's QR text or --photo of the slip")
    return read_qr_photo(photo) if photo is not None else str(qr_text)


def _issued(issued: Issued, as_json: bool) -> None:
    human = [
        f"{issued.action}: device {issued.device_id} in store {issued.store_id} "
        f"(serial {issued.serial})",
        f"card serials {issued.card_range_start}-{issued.card_range_end}",
        f"certificate {issued.certificate_serial}",
        f"lookup key {issued.lookup_key_id} (sealed to the device)",
        f"bundle  {issued.bundle_path}",
        f"QR code {issued.qr_path} ({issued.qr_chars} characters, one code)",
        *(f"revoked certificate {s}" for s in issued.revoked),
    ]
    show(asdict(issued), as_json, "\n".join(human))


def _slip_arguments(func: F) -> F:
    func = click.option(
        "--photo",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A photo of the pairing slip instead of its QR text.",
    )(func)
    return click.argument("qr_text", required=False)(func)


_out = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the bundle (<device>.enrol) and its QR code (<device>.enrol.png) go.",
)
_json = click.option("--json", "as_json", is_flag=True)


@click.command("enrol")
@_slip_arguments
@click.option("--store", "store_id", required=True, help="The store the device goes to.")
@click.option("--device", "device_id", help="Device id (default: the next free K<number>).")
@_out
@_issue_options
@_json
@click.pass_context
def enrol_command(
    ctx: click.Context,
    /,
    qr_text: str | None,
    photo: Path | None,
    store_id: str,
    device_id: str | None,
    out_dir: Path,
    as_json: bool,
    **opts: Any,
) -> None:
    """Register a device from its pairing slip (QR_TEXT or --photo) and issue its bundle."""
    issued = _desk(ctx, opts).enrol(
        _slip_text(qr_text, photo),
        store_id=store_id,
        device_id=device_id,
        out_dir=out_dir,
        actor=opts["actor"].name,
    )
    _issued(issued, as_json)


@click.command("move")
@click.argument("device_id")
@_slip_arguments
@click.option("--store", "store_id", required=True, help="The store the device moves to.")
@click.option("--new-device", "new_device_id", help="A new device id (default: keep it).")
@_out
@_issue_options
@_json
@click.pass_context
def move_command(
    ctx: click.Context,
    /,
    device_id: str,
    qr_text: str | None,
    photo: Path | None,
    store_id: str,
    new_device_id: str | None,
    out_dir: Path,
    as_json: bool,
    **opts: Any,
) -> None:
    """Move DEVICE_ID to another store with its new pairing slip; its old certificate is
    revoked."""
    issued = _desk(ctx, opts).move(
        device_id,
        _slip_text(qr_text, photo),
        store_id=store_id,
        new_device_id=new_device_id,
        out_dir=out_dir,
        actor=opts["actor"].name,
    )
    _issued(issued, as_json)


@click.command("replace")
@click.argument("broken_device_id")
@_slip_arguments
@click.option("--device", "device_id", help="The replacement's id (default: the broken one's).")
@click.option("--reason", default="device replaced", show_default=True)
@_out
@_issue_options
@_json
@click.pass_context
def replace_command(
    ctx: click.Context,
    /,
    broken_device_id: str,
    qr_text: str | None,
    photo: Path | None,
    device_id: str | None,
    reason: str,
    out_dir: Path,
    as_json: bool,
    **opts: Any,
) -> None:
    """A new device (its pairing slip) takes BROKEN_DEVICE_ID's place; the broken one's
    certificate is revoked."""
    issued = _desk(ctx, opts).replace(
        broken_device_id,
        _slip_text(qr_text, photo),
        device_id=device_id,
        reason=reason,
        out_dir=out_dir,
        actor=opts["actor"].name,
    )
    _issued(issued, as_json)


@click.command("revoke")
@click.argument("device_id")
@click.option("--reason", required=True, help="Why (lost, stolen, broken ...).")
@_ca_option
@actor_option
@_json
@click.pass_context
def revoke_command(
    ctx: click.Context, /, device_id: str, reason: str, actor: Actor, as_json: bool, **opts: Any
) -> None:
    """Revoke DEVICE_ID's certificate and rewrite the CRL the broker reads."""
    desk = _desk(ctx, opts)
    serial = desk.revoke(device_id, reason, actor=actor.name)
    crl = desk.settings.crl_path
    show(
        {"device_id": device_id, "certificate_serial": serial, "crl": str(crl)},
        as_json,
        f"revoked {device_id} (certificate {serial}); CRL written to {crl}",
    )


@click.command("crl")
@_ca_option
@click.pass_context
def crl_command(ctx: click.Context, /, **opts: Any) -> None:
    """Write the CRL again from the revocation list (revoke, move and replace already do)."""
    click.echo(str(_desk(ctx, opts).write_crl()))


@click.command("devices")
@_ca_option
@_json
@click.pass_context
def devices_command(ctx: click.Context, /, as_json: bool, **opts: Any) -> None:
    """Every enrolled device: store, state, card range, certificate, last seen by the fleet."""
    rows = _desk(ctx, opts, signs=False).devices()
    lines = [
        f"{'device':<10} {'store':<8} {'state':<8} {'card serials':<23} "
        f"{'certificate':<20} {'fleet':<10} serial"
    ]
    for r in rows:
        cards = f"{r.card_range_start}-{r.card_range_end}"
        lines.append(
            f"{r.device_id:<10} {r.store_id:<8} {r.state:<8} {cards:<23} "
            f"{r.certificate_serial[:20]:<20} {r.fleet_state:<10} {r.serial}"
            + (f" -> {r.successor}" if r.successor else "")
        )
    show({"devices": [asdict(r) for r in rows]}, as_json, "\n".join(lines))


@click.command("enrolments")
@click.option("--device", "device_id", help="Only this device's.")
@_ca_option
@_json
@click.pass_context
def enrolments_command(
    ctx: click.Context, /, device_id: str | None, as_json: bool, **opts: Any
) -> None:
    """The enrolment desk's record: every enrol, move, replace and revoke."""
    rows = _desk(ctx, opts, signs=False).actions(device_id)
    lines = [
        f"{a.at:%Y-%m-%d %H:%M:%S}Z {a.action:<8} {a.device_id:<10} {a.store_id:<8} by {a.actor}"
        for a in rows
    ]
    show({"actions": [asdict(a) for a in rows]}, as_json, "\n".join(lines) or "no enrolments")


def _out_dir(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The ``--out DIR`` a key-making command writes its key into."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help=help_text,
    )


@click.command("enrol-key")
@_out_dir("Where hq-enrol.key (keep at HQ) and hq-enrol.pub (for the image build) go.")
def enrol_key_command(out_dir: Path) -> None:
    """Make HQ's enrolment key pair (once; an existing key is never overwritten)."""
    private, public = write_enrol_key(out_dir)
    click.echo(f"wrote {private} (secret) and {public} (KIOSK_HQ_ENROL_PUB for the image)")


@click.command("lookup-key")
@_out_dir(f"Where {LOOKUP_KEY_FILE} goes (the desk's CA directory; keep and back it up).")
def lookup_key_command(out_dir: Path) -> None:
    """Make the chain's phone-lookup key (once for the whole chain; never overwritten)."""
    path = write_lookup_key(out_dir / LOOKUP_KEY_FILE)
    click.echo(f"wrote {path} (secret: the chain's phone-lookup key, back it up)")


@click.command("member-code-key")
@_out_dir(f"Where {MEMBER_CODE_KEY_FILE} goes (HQ's CA directory, where `kiosk hq web` finds it).")
def member_code_key_command(out_dir: Path) -> None:
    """Make HQ's member-code key (signs the codes on members' phones; never overwritten)."""
    private, public = write_member_code_key(out_dir)
    click.echo(
        f"wrote {private} (secret, for `kiosk hq web`) and {public} "
        "(every kiosk's security.member_code_public_key)"
    )


@click.command("contact-key")
@_out_dir(f"Where {CONTACT_KEY_FILE} goes (the desk's CA directory; keep and back it up).")
def contact_key_command(out_dir: Path) -> None:
    """Make HQ's contact key pair (once for the whole chain; never overwritten): kiosks seal
    the phone numbers of members who agree to messages to it, and only HQ opens them."""
    path = write_contact_key(out_dir)
    click.echo(
        f"wrote {path} (secret: opens the phone numbers members gave for messages, back it "
        "up); bundles issued from now on carry its public half"
    )


def add_enrol_commands(group: click.Group) -> None:
    """Add the enrolment desk's commands to ``kiosk hq``."""
    for command in (
        enrol_command,
        move_command,
        replace_command,
        revoke_command,
        crl_command,
        devices_command,
        enrolments_command,
        enrol_key_command,
        lookup_key_command,
        member_code_key_command,
        contact_key_command,
    ):
        group.add_command(command)
