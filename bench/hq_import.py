"""`kiosk hq import` of a chain's members into PostgreSQL: time and rows per second.

    .venv/bin/python -m bench.hq_import [--members 1000000]

Writes a CSV export like a chain's earlier system gives (card, phone, name, birthday, home
store of 500, tier, two lots of points with their expiry, registration date), starts a
throwaway PostgreSQL cluster (as the tests do), migrates a fresh schema and imports the file
through the same importer the command uses, phone numbers sealed and hashed with fresh keys.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.cards import card_number
from edge.progress import Progress
from edge.security.personal import PhoneVault
from hq.importer import MemberImporter, read_export
from hq.models import CentralMember
from hq.schema import upgrade
from hq.service import make_hq_engine
from tests.postgres import fresh_schema, postgres_cluster

FIRST_SERIAL = 5_000_000  # cards of the earlier system: clear of the kiosks' own ranges
TIERS = ("普通会员", "普通会员", "普通会员", "银卡会员", "金卡会员")


def write_export(path: Path, members: int, stores: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out, Progress("writing", members, "rows") as bar:
        out.write("卡号,手机号,姓名,生日,开卡门店,会员等级,积分明细,注册日期\n")
        for n in range(members):
            lots = f"{rng.randrange(1, 3000)}@2027-06-30;{rng.randrange(1, 900)}@2027-12-31"
            out.write(
                f"{card_number(FIRST_SERIAL + n)},1{rng.choice('3456789')}{n:09d},会员{n},"
                f"19{rng.randrange(40, 99)}-0{rng.randrange(1, 10)}-1{rng.randrange(0, 10)},"
                f"S{rng.randrange(stores):03d},{rng.choice(TIERS)},{lots},2020-05-01\n"
            )
            if n % 10_000 == 9_999:
                bar.advance(10_000)
        bar.advance(members % 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mck-import-") as tmp:
        export = Path(tmp) / "members.csv"
        write_export(export, args.members, args.stores)
        size_mb = export.stat().st_size / 1e6
        vault = PhoneVault(os.urandom(32), os.urandom(32))
        stores = {f"S{n:03d}" for n in range(args.stores)}
        with postgres_cluster() as cluster, fresh_schema(cluster.url) as url:
            engine = make_hq_engine(url)
            upgrade(engine)
            importer = MemberImporter(engine, vault, stores)
            started = time.perf_counter()
            with Progress("importing", args.members, "rows") as bar:
                report = importer.run(read_export(export), bar.advance)
            seconds = time.perf_counter() - started
            with Session(engine) as s:
                count = s.scalar(select(func.count()).select_from(CentralMember))
            engine.dispose()
    print(
        f"{args.members:,} members ({size_mb:.0f} MB of CSV) into PostgreSQL in {seconds:.0f} s: "
        f"{args.members / seconds:,.0f} rows/s; {report.imported:,} in, {report.refused:,} "
        f"refused, {report.points:,} points as opening lots; {count:,} members at HQ"
    )


if __name__ == "__main__":
    main()
