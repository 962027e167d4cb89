"""`kiosk hq campaign ...` as HQ's staff run it: create (signed and published), issue, list,
a member's coupons by card, finish; bad input in one line, changing nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.cards import card_number
from edge.domain.ids import IdFactory
from hq.models import Campaign
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import sqlite_hq_url
from tests.hq.test_campaigns import ingest, registered
from tests.hq.test_staff import ROOT, one_line_error

ids = IdFactory()


def campaign(broker, db_url: str, *args: str, keys: bool = True) -> Ran:
    where = ["--broker-port", str(broker.port), "--tls-dir", str(broker.directory)] if keys else []
    return run_kiosk("hq", "--db", db_url, *where, "campaign", *args, drop_env=("HQ_",), cwd=ROOT)


def campaigns(engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Campaign)) or 0)


def test_hq_staff_run_a_campaign_from_the_console(broker, tmp_path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    engine = make_hq_engine(url)
    try:
        members = [ids.new() for _ in range(3)]
        ingest(
            engine,
            "K001",
            *(registered(m, card_number(7_000 + i), i + 1) for i, m in enumerate(members)),
        )
        until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
        create = (
            "create", "--id", "SPRING26", "--title", "满100减10", "--kind", "threshold_off",
            "--value-cents", "1000", "--threshold-cents", "10000", "--until", until,
            "--audience", "all", "--pool", "2",
        )  # fmt: skip

        # No key to sign the campaigns with: refused before anything is saved.
        unsigned = one_line_error(campaign(broker, url, *create, keys=False))
        assert "no command key" in unsigned
        assert campaigns(engine) == 0
        # Terms that make no sense: one line, nothing saved.
        bad = one_line_error(
            campaign(broker, url, *create[:-2], "--pool", "2", "--threshold-cents", "500")
        )
        assert "threshold" in bad and "\n" not in bad
        assert campaigns(engine) == 0

        made = campaign(broker, url, *create)
        assert made.returncode == 0, made.stderr
        assert "SPRING26 created" in made.stdout and "published, signed" in made.stdout
        issued = campaign(broker, url, "issue", "SPRING26")
        assert issued.returncode == 0, issued.stderr
        assert "2 coupons issued" in issued.stdout and "0 left in the pool" in issued.stdout

        listed = json.loads(campaign(broker, url, "list", "--json").stdout)
        assert [(c["campaign_id"], c["issued"]) for c in listed] == [("SPRING26", 2)]
        first_card = card_number(7_000)
        held = json.loads(campaign(broker, url, "coupons", "--card", first_card, "--json").stdout)
        assert [c["campaign_id"] for c in held] == ["SPRING26"]
        assert "no card" in one_line_error(
            campaign(broker, url, "coupons", "--card", card_number(7_999))
        )

        done = campaign(broker, url, "finish", "SPRING26")
        assert done.returncode == 0, done.stderr
        assert "SPRING26 finished" in done.stdout
        assert "no campaign 'AUTUMN'" in one_line_error(campaign(broker, url, "finish", "AUTUMN"))
    finally:
        engine.dispose()
