"""``kiosk hq import`` and ``kiosk hq data-key``: members from the chain's earlier system."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from edge.console import show
from edge.domain.errors import ConfigError, Refusal
from edge.progress import Progress
from edge.security.keys import create_secret_file, load_secret
from edge.security.personal import PhoneVault
from hq.console import config_of
from hq.enrol import LOOKUP_KEY_FILE
from hq.importer import DEFAULT_TIERS, ImportReport, MemberImporter, read_export
from hq.personal import DATA_KEY_FILE


@click.command("data-key")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help=f"Where {DATA_KEY_FILE} goes (beside the lookup key; keep and back it up).",
)
def data_key_command(out_dir: Path) -> None:
    """Make HQ's data key, which seals the personal data HQ keeps (once; never overwritten)."""
    path = out_dir / DATA_KEY_FILE
    if not create_secret_file(path):
        raise Refusal(f"{path} already exists", code="key_exists")
    click.echo(
        f"wrote {path} (secret: seals the members' phone numbers, names and birthdays at HQ, "
        "back it up)"
    )


def _vault(key_dir: Path) -> PhoneVault:
    paths = {"data": key_dir / DATA_KEY_FILE, "lookup": key_dir / LOOKUP_KEY_FILE}
    for what, path in paths.items():
        if not path.exists():
            make = "data-key" if what == "data" else "lookup-key"
            raise ConfigError(
                f"no {path}: make it with `kiosk hq {make} --out {key_dir}` "
                "(the lookup key must be the chain's, the one the devices were enrolled with)",
                code="key_missing",
            )
    return PhoneVault(load_secret(paths["data"]), load_secret(paths["lookup"]))


def _summary(report: ImportReport) -> str:
    if report.already_done:
        head = f"{report.file} was imported already (import {report.import_id}): nothing changed"
    elif report.resumed_at_line:
        head = f"resumed {report.file} after line {report.resumed_at_line}"
    else:
        head = f"imported {report.file}"
    return (
        f"{head}; members in: {report.imported:,}, rows refused: {report.refused:,}, points "
        f"as opening lots: {report.points:,}, points already expired and left out: "
        f"{report.expired_points:,}"
    )


@click.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--keys",
    "key_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Directory with {LOOKUP_KEY_FILE} and {DATA_KEY_FILE} (default: --tls-dir).",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    help="A store of the chain (repeat it); stores with an enrolled device are known already.",
)
@click.option(
    "--tiers",
    default=",".join(DEFAULT_TIERS),
    show_default=True,
    help="The chain's tier codes, lowest first.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the rows refused in this run (line, card, reason) to this CSV file.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def import_command(
    ctx: click.Context,
    csv_file: Path,
    key_dir: Path | None,
    stores: tuple[str, ...],
    tiers: str,
    report_path: Path | None,
    as_json: bool,
) -> None:
    """Bring the members of a CSV export into HQ: card, phone, name, birthday, home store,
    tier, points with their expiry, registration date (docs/hq.md lists the headers it
    knows). Run it again on the same file to resume after an interruption; a finished file
    changes nothing."""
    from hq.service import open_hq_engine

    config = config_of(ctx)
    if key_dir is None:
        key_dir = Path(config.ca_file).parent if config.ca_file else Path(".")
    vault = _vault(key_dir)
    export = read_export(csv_file)  # a bad file is refused before the database opens
    engine = open_hq_engine(config.database_url)
    importer = MemberImporter(
        engine, vault, set(stores), tuple(t.strip() for t in tiers.split(",") if t.strip())
    )
    try:
        with Progress("importing", export.rows, "rows") as bar:
            report = importer.run(export, bar.advance)
    finally:
        engine.dispose()
    if report_path is not None:
        with report_path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["line", "card_no", "reason"])
            writer.writerows(report.refusals)
    show(report.as_dict(), as_json, _summary(report))


def add_import_commands(group: click.Group) -> None:
    group.add_command(import_command)
    group.add_command(data_key_command)
