"""``kiosk agent`` (the sync service) and ``kiosk sync ...`` (its status, broker set-up)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click
from sqlalchemy import func, select

from drivers.health import HealthState
from edge.cli.common import emit, json_option, state
from edge.console import NUMBER
from edge.domain.errors import InvalidInput
from edge.process import log_to_stderr, settle_heap


@click.command("agent")
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def agent_command(log_level: str) -> None:
    """Run the sync agent until SIGTERM: outbox to HQ, lanes, replica, commands, telemetry."""
    from edge.sync.agent import Agent

    log_to_stderr(log_level)
    app = state().app
    if not app.config.sync.enabled:
        raise InvalidInput("sync is disabled in the configuration ([sync] enabled = true)")
    agent = Agent(app)

    def _stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settle_heap()
    agent.run()


@click.group("sync")
def sync_group() -> None:
    """Sync with HQ: status of the outbox and replica, broker configuration."""


@sync_group.command("status")
@json_option
def sync_status() -> None:
    """Outbox depth, HQ's last contact and the replica cursor."""
    from edge.services.connectivity import HQ_LAST_CONTACT
    from edge.services.replica import STORE_FEED_CURSOR
    from edge.services.tx import get_meta
    from edge.storage.models import OutboxEvent

    app = state().app
    with app.db.read() as session:
        pending = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.delivered_at.is_(None))
        )
        delivered = session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.delivered_at.is_not(None))
        )
        result = {
            "enabled": app.config.sync.enabled,
            "broker": f"{app.config.sync.broker_host}:{app.config.sync.broker_port}",
            "outbox_pending": int(pending or 0),
            "outbox_delivered": int(delivered or 0),
            "hq_last_contact": get_meta(session, HQ_LAST_CONTACT),
            "replica_cursor": int(get_meta(session, STORE_FEED_CURSOR) or 0),
        }
    emit(
        result,
        lambda r: "\n".join(f"{k}: {v}" for k, v in r.items()),
    )


@sync_group.command("broker-config")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("port", type=NUMBER)
@click.argument("identities", nargs=-1, required=True)
@click.option(
    "--max-queued", default=1000, show_default=True, type=NUMBER, help="Per-client queue limit."
)
@click.option(
    "--hq-address",
    default=None,
    metavar="HOST:PORT",
    help="Store broker: bridge to HQ's broker there (needs one bridge:bridge-<store>:<store>).",
)
def broker_config(
    out_dir: Path, port: int, identities: tuple[str, ...], max_queued: int, hq_address: str | None
) -> None:
    """Write a broker: CA (development), certificates, ACL, mosquitto.conf, the bridge.

    IDENTITIES are role:cn[:store], e.g. hq:hq kiosk:K001:S001 lane:S001-L1:S001
    bridge:bridge-S001:S001.
    """
    from edge.sync.broker import Identity, render_broker

    try:
        idents = [Identity.parse(spec) for spec in identities]
        conf = render_broker(out_dir, port, idents, max_queued=max_queued, hq_address=hq_address)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    emit({"config": str(conf)}, f"broker configuration written: {conf}\nrun: mosquitto -c {conf}")


@sync_group.command("health")
@click.argument("name")
@click.argument("health", type=click.Choice([s.value for s in HealthState]))
@click.option("--code", default="", help="Stable machine word, e.g. paper_out.")
@click.option("--reason", default="", help="What a technician should look at.")
def sync_health(name: str, health: str, code: str, reason: str) -> None:
    """Record a peripheral's health for telemetry (what the app does on every change)."""
    from edge.sync.health import report_peripheral

    report_peripheral(state().app, name, health, code, reason)
    emit({"name": name, "state": health, "code": code}, f"{name}: {health} {code}".rstrip())


def register(group: click.Group) -> None:
    group.add_command(agent_command)
    group.add_command(sync_group)
