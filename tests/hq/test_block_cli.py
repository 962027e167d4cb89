"""``kiosk hq block``: a lost card's blocklist update reaches the kiosks, and HQ's audit log
says who blocked it; bad input is one line and records nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol import BlocklistUpdate, Topics, decode
from hq.models import AuditRecord
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import sqlite_hq_url
from tests.sync.helpers import arriving, client

ROOT = Path(__file__).resolve().parents[2]
CARD = "1000000001"


def hq_block(broker, db_url: str, *args: str) -> Ran:
    return run_kiosk(
        "hq", "--db", db_url, "--broker-port", str(broker.port),
        "--tls-dir", str(broker.directory), "block", *args,
        drop_env=("HQ_",), cwd=ROOT,
    )  # fmt: skip


def audit_rows(url: str) -> list[AuditRecord]:
    engine = make_hq_engine(url)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    finally:
        engine.dispose()


def test_a_block_reaches_the_kiosks_and_hqs_audit_names_who(broker, tmp_path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    kiosk = client(broker, "K001", [(Topics().blocklist(), 1)], client_id="K001")
    kiosk.start()
    try:
        assert kiosk.wait_connected(10)
        ran = hq_block(broker, url, CARD, "--reason", "lost", "--actor", "ops-li")
        assert ran.returncode == 0, ran.stderr
        assert "1 card(s)" in ran.stdout
        got = next(arriving(kiosk, 10), None)
        assert got is not None
        update = decode(BlocklistUpdate, got.payload)
        assert (update.add, update.reason) == ([CARD], "lost")
    finally:
        kiosk.close()
    (row,) = audit_rows(url)
    assert (row.actor, row.source, row.action, row.subject) == (
        "ops-li",
        "cli",
        "card.block",
        update.update_id,
    )
    assert CARD in row.after and '"reason": "lost"' in row.after

    # a card number that is not one: one line, nothing published or recorded
    bad = hq_block(broker, url, "12ab\x1b")
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "\x1b" not in lines[0]
    engine = make_hq_engine(url)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditRecord)) == 1
    engine.dispose()


def test_a_block_with_the_broker_away_is_refused_within_seconds_and_recorded_nowhere(
    broker, tmp_path
):
    url = sqlite_hq_url(tmp_path / "hq.db")
    broker.stop()
    try:
        began = time.monotonic()
        away = hq_block(broker, url, CARD, "--reason", "lost")
        waited = time.monotonic() - began
    finally:
        broker.start()
    lines = away.stderr.strip().splitlines()
    assert away.returncode != 0 and len(lines) == 1, away.stderr
    assert lines[0].startswith("error: ") and "unreachable" in lines[0], lines[0]
    # it said so once its attempts had failed for a few seconds, not after its 15 s wait
    assert waited < 10, waited
    assert audit_rows(url) == []


def test_a_block_while_the_broker_restarts_goes_out_once_it_is_back(broker, tmp_path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    broker.stop()
    back = threading.Timer(1.0, broker.start)  # a restart: down for a moment
    back.start()
    try:
        ran = hq_block(broker, url, CARD, "--reason", "lost")
    finally:
        back.join()
    assert ran.returncode == 0, ran.stderr
    assert [row.action for row in audit_rows(url)] == ["card.block"]
