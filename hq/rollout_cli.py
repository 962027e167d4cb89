"""``kiosk hq rollout ...``: update bundles kept at HQ and their staged rollouts to the kiosks.

Each command calls the same function of :mod:`hq.bundles` or :mod:`hq.rollouts` as HQ's web
console, in one transaction with its audit record. ``kiosk hq serve`` moves the rollouts on
every few seconds; ``rollout step`` does it once from here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from edge.console import NUMBER, NumberRange, show
from edge.domain.errors import ConfigError
from edge.domain.text import escape_controls
from edge.progress import Progress
from edge.protocol import Command, Topics
from edge.protocol.link import MqttLink
from hq.audit import Actor
from hq.console import actor_option, config_of
from hq.rollouts import (
    RolloutPolicy,
    RolloutView,
    StepReport,
    UpdateSigner,
    parse_ring,
)
from hq.service import HqConfig

T = TypeVar("T")
_json = click.option("--json", "as_json", is_flag=True)
_SHOW_PROGRESS_BYTES = 64 * 1024 * 1024  # a copy this large shows a progress bar


def _in_session(config: HqConfig, work: Callable[[Session], T]) -> T:
    from hq.service import open_hq_engine

    engine = open_hq_engine(config.database_url)
    try:
        with Session(engine) as session, session.begin():
            return work(session)
    finally:
        engine.dispose()


def _ring(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from edge.domain.errors import InvalidInput

    if value is None:
        return None
    try:
        return parse_ring(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message) from None


_ring_option = click.option(
    "--ring",
    required=True,
    callback=_ring,
    help="device:ID, store:ID, percent:N (a stable N % of the kiosks) or all.",
)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


def _counts(view: RolloutView) -> str:
    return " ".join(f"{state} {n}" for state, n in view.counts.items() if n)


def _headline(view: RolloutView) -> str:
    halted = f" ({view.halted_reason})" if view.halted_reason else ""
    return (
        f"rollout {view.id}: {view.version} [{view.bundle_sha256[:12]}] to {view.ring}, "
        f"{view.state}{halted}; {_counts(view) or 'no kiosk'}"
    )


def _detail(view: RolloutView) -> str:
    p = view.policy
    lines = [
        escape_controls(_headline(view)),
        f"  halts past {p.max_failure_pct} % failed of at least {p.min_attempts} sent; "
        f"{p.in_flight} in flight; timeout {p.timeout_s} s; offline limit {p.offline_limit_s} s",
        f"  started {_when(view.created_at)} by {escape_controls(view.created_by)}",
        "",
        f"{'device':<12} {'store':<8} {'state':<10} {'from':<10} {'sent':<17} {'answer':<9} why",
    ]
    for d in view.devices:
        lines.append(
            escape_controls(
                f"{d.device_id:<12} {d.store_id:<8} {d.state:<10} {d.from_version or '-':<10} "
                f"{_when(d.sent_at):<17} {d.result or '-':<9} {d.reason}"
            )
        )
    return "\n".join(lines)


@click.group("rollout")
def rollout_group() -> None:
    """Staged rollouts of signed update bundles: upload, start on a ring, widen, watch."""


@rollout_group.command("upload")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--update-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="HQ's update key the bundle must verify with (default: update_key in the config, "
    "or hq-update.pub in --tls-dir).",
)
@actor_option
@_json
@click.pass_context
def upload_command(
    ctx: click.Context, bundle: Path, update_key: Path | None, actor: Actor, as_json: bool
) -> None:
    """Keep BUNDLE at HQ once it proves to be an update bundle signed with HQ's update key
    (refused in one line otherwise); prints its SHA-256, which `rollout start` takes."""
    from hq.bundles import add_bundle, load_update_key

    config = config_of(ctx)
    key_path = update_key or (Path(config.update_key) if config.update_key else None)
    if key_path is None:
        raise click.UsageError(
            "no update key to check the bundle with: pass --update-key, --tls-dir (with "
            "hq-update.pub) or update_key in the config"
        )
    key = load_update_key(key_path)
    store = config.bundles_path()
    size = bundle.stat().st_size if bundle.is_file() else 0
    bar = Progress("copying", size, "bytes") if size >= _SHOW_PROGRESS_BYTES else None

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.advance(done - bar.done)

    try:
        kept = _in_session(
            config,
            lambda s: add_bundle(
                s, store, bundle, actor, datetime.now(UTC), key, progress=progress
            ),
        )
    finally:
        if bar is not None:
            bar.finish()
    show(
        kept,
        as_json,
        f"bundle {kept.sha256}: version {kept.version}, {kept.size} bytes, kept in {store}",
    )


@rollout_group.command("bundles")
@_json
@click.pass_context
def bundles_command(ctx: click.Context, as_json: bool) -> None:
    """Every bundle kept at HQ, the newest first."""
    from hq.bundles import list_bundles

    rows = _in_session(config_of(ctx), list_bundles)
    lines = [f"{'sha256':<16} {'version':<12} {'size':>12}  uploaded"]
    for b in rows:
        lines.append(
            escape_controls(
                f"{b.sha256[:16]:<16} {b.version:<12} {b.size:>12}  "
                f"{_when(b.uploaded_at)} by {b.uploaded_by} ({b.file_name})"
            )
        )
    show(rows, as_json, "\n".join(lines) if rows else "no bundles at HQ")


def _signer(config: HqConfig) -> UpdateSigner:
    from hq.rollouts import signer_for

    return signer_for(config)


@rollout_group.command("start")
@click.option("--bundle", required=True, help="The bundle's SHA-256 (or its first 8+ digits).")
@_ring_option
@click.option(
    "--max-failure-pct",
    type=NumberRange(0, 100),
    default=RolloutPolicy.max_failure_pct,
    show_default=True,
    help="Halt when more than this % of the kiosks sent the update failed ...",
)
@click.option(
    "--min-attempts",
    type=NumberRange(1, 100_000),
    default=RolloutPolicy.min_attempts,
    show_default=True,
    help="... once at least this many were sent it.",
)
@click.option(
    "--in-flight",
    type=NumberRange(1, 10_000),
    default=RolloutPolicy.in_flight,
    show_default=True,
    help="Kiosks updating at once, at most.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=NUMBER,
    default=RolloutPolicy.timeout_s,
    show_default=True,
    help="Seconds a kiosk has to come back on the new version, healthy, else it failed.",
)
@click.option(
    "--offline-limit",
    "offline_limit_s",
    type=NUMBER,
    default=RolloutPolicy.offline_limit_s,
    show_default=True,
    help="Seconds a kiosk may be offline before the rollout skips it.",
)
@actor_option
@_json
@click.pass_context
def start_command(
    ctx: click.Context,
    bundle: str,
    ring: Any,
    max_failure_pct: int,
    min_attempts: int,
    in_flight: int,
    timeout_s: int,
    offline_limit_s: int,
    actor: Actor,
    as_json: bool,
) -> None:
    """Start rolling a bundle out to the kiosks of a ring; `kiosk hq serve` sends the
    commands, a few at a time."""
    from hq.rollouts import start_rollout

    config = config_of(ctx)
    _signer(config)  # refuse now what would keep every command from being sent
    policy = RolloutPolicy(max_failure_pct, min_attempts, in_flight, timeout_s, offline_limit_s)
    view = _in_session(
        config,
        lambda s: start_rollout(s, bundle, ring, actor, datetime.now(UTC), policy),
    )
    show(view, as_json, escape_controls(_headline(view)))


@rollout_group.command("status")
@click.argument("rollout_id", type=NUMBER, required=False)
@_json
@click.pass_context
def status_command(ctx: click.Context, rollout_id: int | None, as_json: bool) -> None:
    """Every rollout, or one with each of its kiosks' progress."""
    from hq.rollouts import list_rollouts, rollout_status

    config = config_of(ctx)
    if rollout_id is None:
        views = _in_session(config, list_rollouts)
        text = "\n".join(escape_controls(_headline(v)) for v in views) or "no rollouts"
        show(views, as_json, text)
        return
    view = _in_session(config, lambda s: rollout_status(s, rollout_id))
    show(view, as_json, _detail(view))


@rollout_group.command("widen")
@click.argument("rollout_id", type=NUMBER)
@_ring_option
@actor_option
@_json
@click.pass_context
def widen_command(
    ctx: click.Context, rollout_id: int, ring: Any, actor: Actor, as_json: bool
) -> None:
    """Add the kiosks of the next ring (a store, a larger percentage, all) to a rollout."""
    from hq.rollouts import widen_rollout

    view = _in_session(
        config_of(ctx),
        lambda s: widen_rollout(s, rollout_id, ring, actor, datetime.now(UTC)),
    )
    show(view, as_json, escape_controls(_headline(view)))


@rollout_group.command("halt")
@click.argument("rollout_id", type=NUMBER)
@click.option("--reason", required=True, help="Why, for the record.")
@actor_option
@_json
@click.pass_context
def halt_command(
    ctx: click.Context, rollout_id: int, reason: str, actor: Actor, as_json: bool
) -> None:
    """Stop sending a rollout's commands (the kiosks updating already are still watched)."""
    from hq.rollouts import halt_rollout

    view = _in_session(
        config_of(ctx),
        lambda s: halt_rollout(s, rollout_id, reason, actor, datetime.now(UTC)),
    )
    show(view, as_json, escape_controls(_headline(view)))


@rollout_group.command("resume")
@click.argument("rollout_id", type=NUMBER)
@actor_option
@_json
@click.pass_context
def resume_command(ctx: click.Context, rollout_id: int, actor: Actor, as_json: bool) -> None:
    """Send a halted rollout's commands again; its failures are counted afresh."""
    from hq.rollouts import resume_rollout

    view = _in_session(
        config_of(ctx),
        lambda s: resume_rollout(s, rollout_id, actor, datetime.now(UTC)),
    )
    show(view, as_json, escape_controls(_headline(view)))


@rollout_group.command("cancel")
@click.argument("rollout_id", type=NUMBER)
@actor_option
@_json
@click.pass_context
def cancel_command(ctx: click.Context, rollout_id: int, actor: Actor, as_json: bool) -> None:
    """End a rollout: its kiosks not sent the update yet are skipped."""
    from hq.rollouts import cancel_rollout

    view = _in_session(
        config_of(ctx),
        lambda s: cancel_rollout(s, rollout_id, actor, datetime.now(UTC)),
    )
    show(view, as_json, escape_controls(_headline(view)))


class _BrokerSender:
    """Sends commands on a link of its own, opened at the first command (a step that sends
    nothing never connects)."""

    def __init__(self, config: HqConfig) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.link: MqttLink | None = None

    def __call__(self, command: Command) -> None:
        from hq.service import hq_link, publish_command

        if self.link is None:
            link = hq_link(
                self.config,
                f"{self.config.client_id}-rollout-{secrets.token_hex(3)}",
                (),
                clean_start=True,
            )
            link.start()
            if not link.wait_connected(15):
                link.close()
                raise ConnectionError(
                    f"broker {self.config.broker_host}:{self.config.broker_port} unreachable"
                )
            self.link = link
        if not publish_command(self.link, self.topics, command):
            raise ConnectionError("the link to the broker went down")

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


@rollout_group.command("step")
@_json
@click.pass_context
def step_command(ctx: click.Context, as_json: bool) -> None:
    """Move the rollouts on once, as `kiosk hq serve` does every few seconds: judge the kiosks
    updating, halt a rollout past its threshold, send the next commands."""
    from hq.rollouts import step

    config = config_of(ctx)
    try:
        signer: UpdateSigner | None = _signer(config)
    except ConfigError as exc:
        click.echo(f"note: no commands can be sent: {exc.message}", err=True)
        signer = None
    sender = _BrokerSender(config)
    try:
        report: StepReport = _in_session(
            config, lambda s: step(s, datetime.now(UTC), sender, signer)
        )
    finally:
        sender.close()
    text = (
        f"sent {len(report.sent)}, installed {len(report.installed)}, failed "
        f"{len(report.failed)}, skipped {len(report.skipped)}"
        + "".join(f"; rollout {i} halted" for i in report.halted)
        + "".join(f"; rollout {i} finished" for i in report.finished)
        + (f"; {report.unsent}" if report.unsent else "")
    )
    show(asdict(report), as_json, text)


def add_rollout_commands(group: click.Group) -> None:
    group.add_command(rollout_group)
