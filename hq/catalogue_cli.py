"""``kiosk hq catalogue ...`` and ``kiosk hq rules ...``: HQ's gift catalogue and rules,
each change a new version (who, when, what changed), signed and published to every kiosk.

The commands call :class:`hq.catalogue.CatalogueDesk`, as the console's page does. An edit
is saved first, then published; when the broker cannot be reached the version stays saved
as not published, the command says so and exits 1, and ``publish`` (or the HQ service, on
start and every minute) sends it later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edge.console import NUMBER, show
from edge.domain.errors import InvalidInput
from edge.domain.text import escape_controls
from edge.protocol import Catalogue, ProtocolError, Rules, decode
from hq.audit import Actor
from hq.catalogue import (
    CATALOGUE,
    RULES,
    AppliedVersions,
    CatalogueDesk,
    PictureFile,
    Publication,
    Recorded,
    VersionRow,
    checked_picture,
)
from hq.catalogue_diff import CatalogueDiff, RulesDiff, shown
from hq.console import actor_option, config_of
from hq.service import HqConfig

_based_on = click.option(
    "--based-on",
    type=NUMBER,
    default=None,
    help="The version this change was made on: refused if a newer one was saved meanwhile.",
)
_note = click.option("--note", default="", help="Why, for the history (one line).")
_json = click.option("--json", "as_json", is_flag=True)


def _desk(config: HqConfig, publishing: bool = True) -> CatalogueDesk:
    """The desk on HQ's database; one that publishes refuses, before anything is saved,
    when there is no command key to sign with."""
    from hq.catalogue import BrokerPublisher
    from hq.service import open_hq_engine

    publisher = BrokerPublisher(config) if publishing else None
    return CatalogueDesk(open_hq_engine(config.database_url), publisher)


def _closing(desk: CatalogueDesk) -> None:
    desk.engine.dispose()


def _read_json(path: Path) -> dict[str, Any]:
    """A document's JSON object, or a one-line error."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{path.name}: not a readable JSON file: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path.name}: a JSON object is expected")
    return raw


def _precheck(schema: type[Catalogue] | type[Rules], raw: dict[str, Any]) -> None:
    """``raw`` checked as the devices will check it, before HQ's database is opened (HQ
    fills in the version and date it leaves out)."""
    trial = {"version": 1, "issued_at": "2026-01-01T00:00:00+00:00"} | raw
    try:
        decode(schema, json.dumps(trial).encode())
    except ProtocolError as exc:
        raise InvalidInput(str(exc)) from None


def catalogue_file(path: Path) -> tuple[dict[str, Any], dict[str, PictureFile]]:
    """A catalogue file (JSON: ``gifts``, optional ``version``) and the pictures its gifts
    name (``picture_file``, relative to the file's folder), each checked: one line on the
    first thing wrong, before anything is saved or published."""
    raw = _read_json(path)
    gifts = raw.get("gifts")
    pictures: dict[str, PictureFile] = {}
    for gift in gifts if isinstance(gifts, list) else []:
        name = gift.pop("picture_file", None) if isinstance(gift, dict) else None
        if name is None:
            continue
        what = f"{gift.get('sku', '?')}'s picture {name}"
        try:
            data = (path.parent / str(name)).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{what}: {exc}") from None
        pictures[str(gift.get("sku"))] = checked_picture(data, what)
    _precheck(Catalogue, raw)
    return raw, pictures


def rules_file(path: Path) -> dict[str, Any]:
    """A rules file (JSON: ``points``, ``offline``, optional ``effective_from``,
    ``member_days``, ``tiers``, ``version``), checked: one line on the first thing wrong."""
    raw = _read_json(path)
    _precheck(Rules, raw)
    return raw


def report(recorded: Recorded) -> None:
    """The change, then that it is published; exit 1 with one line when it is not."""
    for line in recorded.diff.lines():
        click.echo(escape_controls(line))
    kind, version = recorded.kind, recorded.version
    if not recorded.published:
        raise click.ClickException(
            f"{kind} v{version} is saved at HQ but not published ({recorded.problem}): run "
            f"`kiosk hq {kind} publish` when the broker is back (the HQ service publishes it "
            "too when it starts)"
        )
    click.echo(f"{kind} v{version} saved and published, signed")


def _published(done: Publication) -> None:
    if done.version == 0:
        raise click.ClickException(done.problem)
    if not done.published:
        raise click.ClickException(f"{done.kind} v{done.version} not published: {done.problem}")
    extra = f" with {done.pictures} picture(s)" if done.kind == CATALOGUE else ""
    click.echo(f"{done.kind} v{done.version} published{extra}, signed")


def _history_text(rows: list[VersionRow]) -> str:
    if not rows:
        return "no versions yet"
    lines = [f"{'version':>7}  {'saved (UTC)':<19}  {'by':<16} {'published (UTC)':<19}  note"]
    for r in rows:
        published = f"{r.published_at:%Y-%m-%d %H:%M:%S}" if r.published_at else "not published"
        lines.append(
            f"{r.version:>7}  {r.at:%Y-%m-%d %H:%M:%S}  {r.actor + ' (' + r.source + ')':<16} "
            f"{published:<19}  {r.note}"
        )
    return "\n".join(escape_controls(line) for line in lines)


def _diff_data(diff: CatalogueDiff | RulesDiff) -> dict[str, Any]:
    if isinstance(diff, RulesDiff):
        return {
            "old_version": diff.old_version,
            "new_version": diff.new_version,
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in diff.changes],
        }
    return {
        "old_version": diff.old_version,
        "new_version": diff.new_version,
        "added": [g.model_dump(mode="json") for g in diff.added],
        "removed": [g.model_dump(mode="json") for g in diff.removed],
        "changed": [
            {
                "sku": g.sku,
                "name": g.name,
                "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in g.changes],
            }
            for g in diff.changed
        ],
    }


def _diff_versions(v1: int | None, v2: int | None) -> tuple[int | None, int | None]:
    """``diff`` (newest against the one before), ``diff V`` (V against the one before),
    ``diff V1 V2``."""
    if v2 is None:
        return None, v1
    return v1, v2


def _applied_text(kind: str, applied: AppliedVersions) -> str:
    newest = applied.newest_catalogue if kind == CATALOGUE else applied.newest_rules
    counts = applied.catalogue if kind == CATALOGUE else applied.rules
    lines = [f"HQ's newest {kind}: " + (f"v{newest}" if newest else "none")]
    for c in counts:
        label = f"v{c.version}" if c.version else "none of HQ's"
        lines.append(f"  {label:<14} {c.stores} store(s), {c.devices} kiosk(s)")
    lines.append("")
    lines.append(f"{'store':<10} {'kiosk':<12} {'state':<8} {'catalogue':>9} {'rules':>6}")
    for d in applied.devices:
        lines.append(
            f"{d.store_id:<10} {d.device_id:<12} {d.state:<8} "
            f"{d.catalogue_version or '-':>9} {d.rules_version or '-':>6}"
        )
    behind = applied.behind(kind)
    if newest and behind:
        lines.append("")
        lines.append(f"{len(behind)} kiosk(s) without {kind} v{newest}")
    return "\n".join(escape_controls(line) for line in lines)


def _applied(ctx: click.Context, kind: str, as_json: bool) -> None:
    from sqlalchemy.orm import Session

    from hq.catalogue import applied_versions

    desk = _desk(config_of(ctx), publishing=False)
    try:
        with Session(desk.engine) as session:
            applied = applied_versions(session)
    finally:
        _closing(desk)
    show(applied, as_json, lambda a: _applied_text(kind, a))


def parse_setting(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE``: the value as JSON when it reads as JSON (a number, true, a list
    ...), else as text; nothing after ``=`` clears the field (null)."""
    field, sep, value = text.partition("=")
    if not sep or not field.strip():
        raise InvalidInput(f"expected FIELD=VALUE, got {text!r}")
    if value == "":
        return field.strip(), None
    try:
        return field.strip(), json.loads(value)
    except ValueError:
        return field.strip(), value


# ---------------------------------------------------------------------- catalogue


@click.group("catalogue")
def catalogue_group() -> None:
    """HQ's gift catalogue: every version kept, each change signed and published to every
    kiosk; which kiosks applied which version; each store's stock as its kiosks report it."""


@catalogue_group.command("show")
@click.option("--version", type=NUMBER, default=None, help="This version (default: newest).")
@_json
@click.pass_context
def catalogue_show(ctx: click.Context, version: int | None, as_json: bool) -> None:
    """The catalogue's gifts: points price, kind, limits, whether sold, picture."""
    desk = _desk(config_of(ctx), publishing=False)
    try:
        found = desk.catalogue(version)
    finally:
        _closing(desk)

    def human(_: object) -> str:
        r = found.row
        lines = [
            f"catalogue v{r.version}, saved {r.at:%Y-%m-%d %H:%M:%S} UTC by {r.actor}"
            + (f": {r.note}" if r.note else ""),
            f"{'sku':<14} {'points':>8} {'kind':<7} {'limit':>5} {'low':>4} {'sold':<4} "
            f"{'picture':<12} name",
        ]
        for g in found.catalogue.gifts:
            limit = "-" if g.per_member_limit is None else str(g.per_member_limit)
            picture = g.picture.sha256[:12] if g.picture else "-"
            lines.append(
                f"{g.sku:<14} {g.points_price:>8} {g.kind:<7} {limit:>5} {g.low_stock:>4} "
                f"{'yes' if g.active else 'no':<4} {picture:<12} {g.name}"
            )
        return "\n".join(escape_controls(line) for line in lines)

    show({"version": found.row, "catalogue": found.catalogue}, as_json, human)


@catalogue_group.command("history")
@click.option("--limit", type=NUMBER, default=50, show_default=True)
@_json
@click.pass_context
def catalogue_history(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Every version of the catalogue, newest first: when, who, published, note."""
    desk = _desk(config_of(ctx), publishing=False)
    try:
        rows = desk.history(CATALOGUE, limit)
    finally:
        _closing(desk)
    show(rows, as_json, _history_text)


@catalogue_group.command("diff")
@click.argument("v1", type=NUMBER, required=False)
@click.argument("v2", type=NUMBER, required=False)
@_json
@click.pass_context
def catalogue_diff(ctx: click.Context, v1: int | None, v2: int | None, as_json: bool) -> None:
    """What changed from V1 to V2 (one version: from the one before it; none: the newest)."""
    old, new = _diff_versions(v1, v2)
    desk = _desk(config_of(ctx), publishing=False)
    try:
        diff = desk.catalogue_diff(old, new)
    finally:
        _closing(desk)
    show(_diff_data(diff), as_json, "\n".join(escape_controls(x) for x in diff.lines()))


@catalogue_group.command("gift-set")
@click.argument("sku")
@click.option("--name", default=None)
@click.option("--points", "points_price", type=NUMBER, default=None, help="Points price.")
@click.option("--kind", type=click.Choice(["gift", "coupon"]), default=None)
@click.option("--low-stock", type=NUMBER, default=None, help="Warn at this stock or below.")
@click.option("--limit", "per_member_limit", type=NUMBER, default=None, help="At most N a member.")
@click.option("--no-limit", is_flag=True, help="No limit per member.")
@click.option("--coupon-value-cents", type=NUMBER, default=None)
@click.option("--coupon-valid-days", type=NUMBER, default=None)
@click.option("--active/--inactive", default=None, help="Sold at the kiosks, or not.")
@click.option("--picture", type=click.Path(dir_okay=False, path_type=Path), help="A PNG or JPEG.")
@click.option("--no-picture", is_flag=True, help="Take the gift's picture away.")
@_based_on
@_note
@actor_option
@click.pass_context
def gift_set(
    ctx: click.Context,
    /,
    sku: str,
    no_limit: bool,
    picture: Path | None,
    no_picture: bool,
    based_on: int | None,
    note: str,
    actor: Actor,
    **fields: Any,
) -> None:
    """Add gift SKU (with --name and --points) or change what the options say; a new
    catalogue version, published."""
    changes = {k: v for k, v in fields.items() if v is not None}
    if no_limit:
        if "per_member_limit" in changes:
            raise click.UsageError("--limit or --no-limit, not both")
        changes["per_member_limit"] = None
    file = None
    if picture is not None:
        try:
            data = picture.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{sku}'s picture {picture.name}: {exc}") from None
        file = checked_picture(data, f"{sku}'s picture {picture.name}")
    if not changes and file is None and not no_picture:
        raise click.UsageError("nothing to change: give at least one option")
    desk = _desk(config_of(ctx))
    try:
        recorded = desk.set_gift(
            actor,
            sku,
            changes,
            picture=file,
            drop_picture=no_picture,
            based_on=based_on,
            note=note,
        )
    finally:
        _closing(desk)
    report(recorded)


@catalogue_group.command("gift-retire")
@click.argument("sku")
@_based_on
@_note
@actor_option
@click.pass_context
def gift_retire(
    ctx: click.Context, sku: str, based_on: int | None, note: str, actor: Actor
) -> None:
    """No longer sell gift SKU (kept in the catalogue, inactive): a new version, published."""
    desk = _desk(config_of(ctx))
    try:
        recorded = desk.retire_gift(actor, sku, based_on=based_on, note=note)
    finally:
        _closing(desk)
    report(recorded)


def push_catalogue_file(
    ctx: click.Context, path: Path, based_on: int | None, note: str, actor: Actor
) -> None:
    raw, pictures = catalogue_file(path)
    desk = _desk(config_of(ctx))
    try:
        recorded = desk.replace_catalogue(
            actor, raw, pictures=pictures, based_on=based_on, note=note
        )
    finally:
        _closing(desk)
    report(recorded)


@catalogue_group.command("push")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_based_on
@_note
@actor_option
@click.pass_context
def catalogue_push(
    ctx: click.Context, path: Path, based_on: int | None, note: str, actor: Actor
) -> None:
    """The whole catalogue from PATH (JSON: gifts; a gift's "picture_file", relative to the
    JSON's folder, is its picture): a new version, published."""
    push_catalogue_file(ctx, path, based_on, note, actor)


@catalogue_group.command("publish")
@click.option(
    "--all-pictures", is_flag=True, help="Send every picture again, not only the new ones."
)
@actor_option
@click.pass_context
def catalogue_publish(ctx: click.Context, all_pictures: bool, actor: Actor) -> None:
    """Publish the newest catalogue again (after a broker outage, or to a new broker)."""
    desk = _desk(config_of(ctx))
    try:
        done = desk.publish(CATALOGUE, actor, all_pictures=all_pictures)
    finally:
        _closing(desk)
    _published(done)


@catalogue_group.command("applied")
@_json
@click.pass_context
def catalogue_applied(ctx: click.Context, as_json: bool) -> None:
    """Which catalogue version each kiosk has applied, and how many stores have each."""
    _applied(ctx, CATALOGUE, as_json)


@catalogue_group.command("stock")
@click.option("--store", "store_id", default=None)
@click.option("--sku", default=None)
@_json
@click.pass_context
def catalogue_stock(
    ctx: click.Context, store_id: str | None, sku: str | None, as_json: bool
) -> None:
    """Each store's stock of each gift as its kiosks' events told HQ (a gift a kiosk never
    restocked or reported is not listed: HQ has no figure for it)."""
    from sqlalchemy.orm import Session

    from hq.stock import store_stock

    desk = _desk(config_of(ctx), publishing=False)
    try:
        with Session(desk.engine) as session:
            rows = store_stock(session, store_id=store_id, sku=sku)
    finally:
        _closing(desk)

    def human(_: object) -> str:
        if not rows:
            return "no stock figures from the stores yet"
        lines = [f"{'store':<10} {'sku':<14} {'stock':>7}  {'as of (UTC)':<19}  kiosks"]
        for r in rows:
            kiosks = ", ".join(f"{k.device_id} {k.stock}" for k in r.kiosks)
            lines.append(
                f"{r.store_id:<10} {r.sku:<14} {r.stock:>7}  {r.at:%Y-%m-%d %H:%M:%S}  {kiosks}"
            )
        return "\n".join(escape_controls(line) for line in lines)

    show(rows, as_json, human)


# ---------------------------------------------------------------------- rules


@click.group("rules")
def rules_group() -> None:
    """HQ's rules for every kiosk (points, offline caps, member days, tiers): every version
    kept, each change signed and published; which kiosks have which version in force."""


@rules_group.command("show")
@click.option("--version", type=NUMBER, default=None, help="This version (default: newest).")
@_json
@click.pass_context
def rules_show(ctx: click.Context, version: int | None, as_json: bool) -> None:
    """The rules, field by field."""
    from hq.catalogue_diff import rules_fields

    desk = _desk(config_of(ctx), publishing=False)
    try:
        found = desk.rules(version)
    finally:
        _closing(desk)

    def human(_: object) -> str:
        r = found.row
        lines = [
            f"rules v{r.version}, saved {r.at:%Y-%m-%d %H:%M:%S} UTC by {r.actor}"
            + (f": {r.note}" if r.note else "")
        ]
        fields = rules_fields(found.rules)
        if fields["effective_from"] is None:
            fields["effective_from"] = "at once"
        lines += [f"  {k}: {shown(v)}" for k, v in fields.items()]
        return "\n".join(escape_controls(line) for line in lines)

    show({"version": found.row, "rules": found.rules}, as_json, human)


@rules_group.command("history")
@click.option("--limit", type=NUMBER, default=50, show_default=True)
@_json
@click.pass_context
def rules_history(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Every version of the rules, newest first: when, who, published, note."""
    desk = _desk(config_of(ctx), publishing=False)
    try:
        rows = desk.history(RULES, limit)
    finally:
        _closing(desk)
    show(rows, as_json, _history_text)


@rules_group.command("diff")
@click.argument("v1", type=NUMBER, required=False)
@click.argument("v2", type=NUMBER, required=False)
@_json
@click.pass_context
def rules_diff(ctx: click.Context, v1: int | None, v2: int | None, as_json: bool) -> None:
    """What changed from V1 to V2 (one version: from the one before it; none: the newest)."""
    old, new = _diff_versions(v1, v2)
    desk = _desk(config_of(ctx), publishing=False)
    try:
        diff = desk.rules_diff(old, new)
    finally:
        _closing(desk)
    show(_diff_data(diff), as_json, "\n".join(escape_controls(x) for x in diff.lines()))


def push_rules_file(
    ctx: click.Context, path: Path, based_on: int | None, note: str, actor: Actor
) -> None:
    raw = rules_file(path)
    desk = _desk(config_of(ctx))
    try:
        recorded = desk.replace_rules(actor, raw, based_on=based_on, note=note)
    finally:
        _closing(desk)
    report(recorded)


@rules_group.command("push")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_based_on
@_note
@actor_option
@click.pass_context
def rules_push(
    ctx: click.Context, path: Path, based_on: int | None, note: str, actor: Actor
) -> None:
    """The whole rules from PATH (JSON: points, offline; optional effective_from,
    member_days, tiers): a new version, signed and published."""
    push_rules_file(ctx, path, based_on, note, actor)


@rules_group.command("set")
@click.argument("settings", nargs=-1, required=True)
@_based_on
@_note
@actor_option
@click.pass_context
def rules_set(
    ctx: click.Context,
    settings: tuple[str, ...],
    based_on: int | None,
    note: str,
    actor: Actor,
) -> None:
    """Change fields of the newest rules (FIELD=VALUE: points.points_per_yuan=2,
    offline.max_offline_hours=48, tiers.gold.threshold=500000, member_days='[{"weekday": 2,
    "multiplier_pct": 200}]', effective_from=2027-01-01T00:00:00+08:00): a new version,
    signed and published."""
    changes = dict(parse_setting(s) for s in settings)
    desk = _desk(config_of(ctx))
    try:
        recorded = desk.set_rules(actor, changes, based_on=based_on, note=note)
    finally:
        _closing(desk)
    report(recorded)


@rules_group.command("publish")
@actor_option
@click.pass_context
def rules_publish(ctx: click.Context, actor: Actor) -> None:
    """Publish the newest rules again (after a broker outage, or to a new broker)."""
    desk = _desk(config_of(ctx))
    try:
        done = desk.publish(RULES, actor)
    finally:
        _closing(desk)
    _published(done)


@rules_group.command("applied")
@_json
@click.pass_context
def rules_applied(ctx: click.Context, as_json: bool) -> None:
    """Which rules version each kiosk has in force, and how many stores have each."""
    _applied(ctx, RULES, as_json)


def add_catalogue_commands(group: click.Group) -> None:
    group.add_command(catalogue_group)
    group.add_command(rules_group)
