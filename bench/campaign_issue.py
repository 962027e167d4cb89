"""Issuing a campaign's coupons to a chain's members at HQ, on PostgreSQL: time and coupons a
second, against the import of the same members in the same run.

    .venv/bin/python -m bench.campaign_issue [--members 200000]

Imports the members (as `bench.hq_import` does) into a throwaway PostgreSQL cluster, then
issues a campaign for every member, a second time (every member at their limit: nothing
issued, the cost of running it again), and a campaign for the members with a birthday this
month, each through `hq.coupons.issue_campaign`, the function `kiosk hq campaign issue` calls.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.hq_import import write_export
from edge.domain.coupons import Audience, CouponKind, Terms
from edge.domain.ids import IdFactory
from edge.progress import Progress
from edge.security.personal import PhoneVault
from hq.audit import Actor
from hq.coupons import CampaignSpec, IssueReport, create_campaign, issue_campaign
from hq.importer import MemberImporter, read_export
from hq.models import CampaignCoupon
from hq.schema import upgrade
from hq.service import make_hq_engine
from tests.postgres import fresh_schema, postgres_cluster

BENCH = Actor("bench")

# the export's birthdays fall in January to September: March holds about a ninth of them
NOW = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)


def _spec(campaign_id: str, audience: Audience, pool: int) -> CampaignSpec:
    terms = Terms(
        campaign_id, "满100减10", CouponKind.THRESHOLD_OFF, 1000, 10_000, 0, "",
        NOW - timedelta(days=1), NOW + timedelta(days=30),
    )  # fmt: skip
    return CampaignSpec(terms, audience, pool_total=pool, per_member_limit=1)


def _issue(engine, campaign_id: str, what: str) -> tuple[IssueReport, float]:
    with Progress(what, 1, "members") as bar:
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.advance(done - bar.done)

        report = issue_campaign(engine, campaign_id, NOW, IdFactory(), progress=progress)
        return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--stores", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mck-campaign-") as tmp:
        export = Path(tmp) / "members.csv"
        write_export(export, args.members, args.stores)
        vault = PhoneVault(os.urandom(32), os.urandom(32))
        stores = {f"S{n:03d}" for n in range(args.stores)}
        with postgres_cluster() as cluster, fresh_schema(cluster.url) as url:
            engine = make_hq_engine(url)
            upgrade(engine)
            started = time.perf_counter()
            with Progress("importing", args.members, "rows") as bar:
                MemberImporter(engine, vault, stores).run(read_export(export), bar.advance)
            imported_s = time.perf_counter() - started
            with Session(engine) as s, s.begin():
                # a pool of twice the chain: the second run finds every member at the limit
                create_campaign(s, _spec("ALL", Audience.ALL, 2 * args.members), BENCH, NOW)
                create_campaign(s, _spec("BDAY", Audience.BIRTHDAY_MONTH, args.members), BENCH, NOW)
            everyone, everyone_s = _issue(engine, "ALL", "issuing to all")
            again, again_s = _issue(engine, "ALL", "issuing again")
            birthdays, birthdays_s = _issue(engine, "BDAY", "birthday month")
            with Session(engine) as s:
                stored = s.scalar(select(func.count()).select_from(CampaignCoupon))
            engine.dispose()
    import_rate = args.members / imported_s
    issue_rate = everyone.issued / everyone_s
    print(
        f"{args.members:,} members imported in {imported_s:.1f} s ({import_rate:,.0f} rows/s)\n"
        f"campaign to every member: {everyone.issued:,} coupons in {everyone_s:.1f} s "
        f"({issue_rate:,.0f} coupons/s, {issue_rate / import_rate:.2f}x the import's rate)\n"
        f"the same campaign again: {again.issued:,} issued, {again.at_limit:,} at their limit, "
        f"{again_s:.1f} s\n"
        f"birthday-month campaign: {birthdays.issued:,} coupons in {birthdays_s:.1f} s\n"
        f"{stored:,} coupons at HQ"
    )


if __name__ == "__main__":
    main()
