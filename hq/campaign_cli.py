"""``kiosk hq campaign ...``: HQ's coupon campaigns, their coupons and members' wallets.

Creating or finishing a campaign saves it and publishes the campaigns document, signed and
retained, for every kiosk (one that connects later gets it then). Issuing fills members'
wallets; members see their coupons at any kiosk while HQ is reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.console import show
from edge.domain.coupons import Audience, CouponKind, Terms, check_campaign_id
from edge.domain.errors import ConfigError, InvalidInput
from edge.domain.ids import IdFactory
from edge.domain.text import escape_controls
from edge.progress import Progress
from hq.audit import Actor
from hq.console import actor_option, config_of
from hq.coupons import (
    CampaignSpec,
    campaigns_document,
    create_campaign,
    finish_campaign,
    issue_campaign,
)
from hq.merges import find_member_id
from hq.models import Campaign, CampaignCoupon
from hq.service import HqConfig

T = TypeVar("T")


def _engine(config: HqConfig) -> Engine:
    from hq.service import open_hq_engine

    return open_hq_engine(config.database_url)


def _in_session(config: HqConfig, work: Callable[[Session], T]) -> T:
    engine = _engine(config)
    try:
        with Session(engine) as session, session.begin():
            return work(session)
    finally:
        engine.dispose()


def _signing_key_there(config: HqConfig) -> None:
    """Refuses before anything is changed when the campaigns could not be signed after.

    Raises:
        ConfigError: ``no_command_key``.
    """
    if not config.command_key or not Path(config.command_key).is_file():
        raise ConfigError(
            "no command key to sign the campaigns: pass --tls-dir or command_key in the config",
            code="no_command_key",
        )


def _publish(config: HqConfig) -> int:
    """Publishes the campaigns document at its current version; the version."""
    from hq.commands import push_campaigns

    _signing_key_there(config)
    document = _in_session(config, lambda s: campaigns_document(s, datetime.now(UTC)))
    try:
        push_campaigns(config, document)
    except ConnectionError as exc:
        raise click.ClickException(
            f"saved at HQ as campaigns version {document.version}, but not published ({exc}): "
            "run `kiosk hq campaign publish` when the broker is back"
        ) from None
    return document.version


def _when(text: str, what: str) -> datetime:
    """An ISO date (its start, UTC) or an ISO time with its offset."""
    try:
        if len(text.strip()) == 10:
            return datetime.combine(datetime.fromisoformat(text.strip()).date(), time(), UTC)
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{what} {text[:40]!r} is not an ISO date or time", code="bad_campaign"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{what} needs its UTC offset (say +08:00)", code="bad_campaign")
    return parsed.astimezone(UTC)


@click.group("campaign")
def campaign_group() -> None:
    """Coupon campaigns (活动): templates, coupons in members' wallets, used once chain-wide."""


@campaign_group.command("create")
@click.option("--id", "campaign_id", required=True, help="1-24 letters/digits, e.g. SPRING26.")
@click.option("--title", required=True, help="What members and tills see, e.g. 满100减10.")
@click.option(
    "--kind", required=True, type=click.Choice([k.value for k in CouponKind]), help="What it gives."
)
@click.option("--value-cents", type=int, default=0, help="Amount off (amount_off, threshold_off).")
@click.option("--threshold-cents", type=int, default=0, help="Basket needed (threshold_off).")
@click.option("--percent", type=int, default=0, help="Percentage off (percent_off).")
@click.option("--gift-sku", default="", help="The gift (gift).")
@click.option("--from", "valid_from", default=None, help="Valid from (ISO; default now).")
@click.option("--until", "valid_until", required=True, help="Valid until (ISO date or time).")
@click.option(
    "--audience",
    required=True,
    type=click.Choice([a.value for a in Audience]),
    help="Who gets its coupons.",
)
@click.option("--tier", default=None, help="The tier (audience tier).")
@click.option("--pool", "pool_total", type=int, default=1000, show_default=True)
@click.option("--per-member", "per_member", type=int, default=1, show_default=True)
@actor_option
@click.pass_context
def create_command(
    ctx: click.Context,
    campaign_id: str,
    title: str,
    kind: str,
    value_cents: int,
    threshold_cents: int,
    percent: int,
    gift_sku: str,
    valid_from: str | None,
    valid_until: str,
    audience: str,
    tier: str | None,
    pool_total: int,
    per_member: int,
    actor: Actor,
) -> None:
    """Create a campaign and publish the campaigns document to every kiosk."""
    config = config_of(ctx)
    _signing_key_there(config)
    now = datetime.now(UTC)
    terms = Terms(
        campaign_id=check_campaign_id(campaign_id),
        title=title,
        kind=CouponKind(kind),
        value_cents=value_cents,
        threshold_cents=threshold_cents,
        percent=percent,
        gift_sku=gift_sku,
        valid_from=_when(valid_from, "--from") if valid_from else now,
        valid_until=_when(valid_until, "--until"),
    )
    spec = CampaignSpec(terms, Audience(audience), tier, pool_total, per_member)
    _in_session(config, lambda s: create_campaign(s, spec, actor, now))
    version = _publish(config)
    click.echo(
        f"campaign {terms.campaign_id} created ({kind}, {audience}, pool {pool_total}); "
        f"campaigns version {version} published, signed"
    )


@campaign_group.command("issue")
@click.argument("campaign_id")
@click.option("--member", "members", multiple=True, help="Only these members (ids; repeat).")
@actor_option
@click.pass_context
def issue_command(
    ctx: click.Context, campaign_id: str, members: tuple[str, ...], actor: Actor
) -> None:
    """Issue the campaign's coupons to its audience now (or to the --member given), one each
    up to its per-member limit, while its pool lasts; running it again tops up, never
    doubles."""
    config = config_of(ctx)
    engine = _engine(config)
    try:
        bar: Progress | None = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = Progress("issuing", total, "members").__enter__()
            bar.advance(done - bar.done)

        report = issue_campaign(
            engine,
            check_campaign_id(campaign_id),
            datetime.now(UTC),
            IdFactory(),
            list(members) if members else None,
            progress,
            actor,
        )
        if bar is not None:
            bar.finish()
    finally:
        engine.dispose()
    click.echo(
        f"campaign {report.campaign_id}: {report.issued} coupons issued, {report.at_limit} "
        f"members had theirs already, {report.pool_left} left in the pool"
    )


@campaign_group.command("finish")
@click.argument("campaign_id")
@actor_option
@click.pass_context
def finish_command(ctx: click.Context, campaign_id: str, actor: Actor) -> None:
    """End a campaign now: its coupons are refused from now on, at HQ at once and at every
    kiosk once the campaigns document reaches it."""
    config = config_of(ctx)
    _signing_key_there(config)
    _in_session(config, lambda s: finish_campaign(s, campaign_id, actor, datetime.now(UTC)))
    version = _publish(config)
    click.echo(
        f"campaign {campaign_id.upper()} finished; campaigns version {version} published, signed"
    )


@campaign_group.command("publish")
@click.pass_context
def publish_command(ctx: click.Context) -> None:
    """Publish the campaigns document again (after a broker outage, say)."""
    version = _publish(config_of(ctx))
    click.echo(f"campaigns version {version} published, signed")


def _rows(session: Session) -> list[dict[str, object]]:
    used = dict(
        session.execute(
            select(CampaignCoupon.campaign_id, func.count())
            .where(CampaignCoupon.used_at.is_not(None))
            .group_by(CampaignCoupon.campaign_id)
        )
        .tuples()
        .all()
    )
    rows = []
    for c in session.scalars(select(Campaign).order_by(Campaign.created_at)):
        rows.append(
            {
                "campaign_id": c.campaign_id,
                "title": c.title,
                "kind": c.kind,
                "audience": c.audience + (f":{c.audience_tier}" if c.audience_tier else ""),
                "valid_from": c.valid_from.isoformat(),
                "valid_until": c.valid_until.isoformat(),
                "pool": c.pool_total,
                "issued": c.issued,
                "used": int(used.get(c.campaign_id, 0)),
                "finished": c.finished_at.isoformat() if c.finished_at else None,
            }
        )
    return rows


@campaign_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every campaign: its terms, how many coupons were issued and used."""
    rows = _in_session(config_of(ctx), _rows)
    lines = [f"{'campaign':<12} {'kind':<13} {'audience':<16} {'issued':>8} {'used':>8}  title"]
    for r in rows:
        state = " (finished)" if r["finished"] else ""
        lines.append(
            f"{r['campaign_id']!s:<12} {r['kind']!s:<13} {r['audience']!s:<16} "
            f"{r['issued']!s:>8} {r['used']!s:>8}  {escape_controls(str(r['title']))}{state}"
        )
    show(rows, as_json, "\n".join(lines))


@campaign_group.command("coupons")
@click.option("--member", "member_id", default=None, help="The member's id.")
@click.option("--card", "card_no", default=None, help="Or one of the member's cards.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def coupons_command(
    ctx: click.Context, member_id: str | None, card_no: str | None, as_json: bool
) -> None:
    """A member's coupons of every campaign: issued, used (where, when) or not."""
    if (member_id is None) == (card_no is None):
        raise click.UsageError("give --member or --card")

    def read(session: Session) -> list[dict[str, object]]:
        who = find_member_id(session, card_no or member_id or "")
        found = session.scalars(
            select(CampaignCoupon)
            .where(CampaignCoupon.member_id == who)
            .order_by(CampaignCoupon.issued_at)
        ).all()
        return [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict_row(c).items()}
            for c in found
        ]

    rows = _in_session(config_of(ctx), read)
    lines = [f"{'coupon':<40} {'issued':<17} used"]
    for r in rows:
        used = f"{r['used_at']} at {r['used_store_id']}" if r["used_at"] else "-"
        lines.append(f"{r['coupon_id']!s:<40} {str(r['issued_at'])[:16]:<17} {used}")
    show(rows, as_json, "\n".join(lines) if rows else "no coupons")


def asdict_row(c: CampaignCoupon) -> dict[str, object]:
    return {
        "coupon_id": c.coupon_id,
        "campaign_id": c.campaign_id,
        "member_id": c.member_id,
        "issued_at": c.issued_at,
        "used_at": c.used_at,
        "used_store_id": c.used_store_id,
        "used_device_id": c.used_device_id,
        "used_offline": c.used_offline,
    }


def add_campaign_commands(group: click.Group) -> None:
    group.add_command(campaign_group)
