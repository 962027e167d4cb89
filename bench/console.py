"""HQ's web console on PostgreSQL with a chain's fleet: server time of its pages.

    .venv/bin/python -m bench.console [--devices 2000] [--days 30]

Fills a throwaway PostgreSQL cluster with DEVICES devices' telemetry (through
`hq.fleet.apply_telemetry`, as HQ's workers store it), a month of one-a-minute samples for
one device, and a few hundred alerts; then asks the console's pages in-process (the real
ASGI app, signed in) and prints each page's median time against reading the devices' rows
alone in the same run. The issue's budget: the fleet page with 2,000 devices under 500 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from edge.progress import Progress
from hq import accounts, fleet
from hq.accounts import Role
from hq.audit import Actor
from hq.ledger import raise_alert
from hq.models import FleetDevice, TelemetrySample
from hq.schema import upgrade
from hq.service import HqConfig, make_hq_engine
from hq.web.app import make_app
from hq.web.core import LOGIN_COOKIE, Console
from tests.hq.database import hq_data_key_file
from tests.postgres import fresh_schema, postgres_cluster
from tests.web.conftest import telemetry

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PASSWORD = "quiet-harbour-77"


def _fill(engine, devices: int, days: int) -> str:
    per_store = 2
    with Progress("devices", devices, "devices") as bar, Session(engine) as s:
        for n in range(devices):
            store = n // per_store
            device = f"K{n + 1:05d}"
            at = NOW - timedelta(seconds=n % 300)
            sample = telemetry(
                device, f"S{store + 1:04d}", at, outbox=n % 97,
                printer="failed" if n % 53 == 0 else "ok",
                printer_code="paper_out" if n % 53 == 0 else "",
            )  # fmt: skip
            fleet.apply_telemetry(s, sample, at)
            if n % 500 == 499:
                s.commit()
            bar.advance(1)
        for n in range(300):
            raise_alert(s, "overdraft", f"M{n:06d}", "balance below zero", NOW, f"S{n % 900:04d}")
        accounts.create_account(s, "bench", "Bench", Role.ADMIN, PASSWORD, Actor("bench"), NOW)
        s.commit()
    minutes = days * 24 * 60
    rows = [
        {
            "device_id": "K00001",
            "at": NOW - timedelta(minutes=minutes - m),
            "sample": json.dumps({"outbox_depth": m % 50, "temperature_c": 40 + m % 20}),
        }
        for m in range(minutes)
    ]
    with Progress("samples", len(rows), "rows") as bar, engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(TelemetrySample), rows[start : start + 5000])
            bar.advance(len(rows[start : start + 5000]))
        conn.execute(text("ANALYZE"))
    return "K00001"


def _median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with postgres_cluster() as cluster, fresh_schema(cluster.url) as url:
        engine = make_hq_engine(url)
        upgrade(engine)
        device = _fill(engine, args.devices, args.days)
        config = HqConfig(database_url=url, data_key_file=hq_data_key_file())
        console = Console(config, engine, clock=lambda: NOW)
        client = TestClient(make_app(console), follow_redirects=False)
        client.get("/login")
        client.post(
            "/login",
            data={"csrf": client.cookies.get(LOGIN_COOKIE), "name": "bench", "password": PASSWORD},
        )

        def get(path: str):
            def call() -> None:
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code)

            return call

        def rows_alone() -> None:
            with Session(engine) as s:
                s.scalars(select(FleetDevice)).all()

        baseline = _median_ms(rows_alone, args.runs)
        pages = {
            f"fleet, {args.devices:,} devices": "/fleet",
            "fleet, one store": "/fleet?store=S0001",
            "fleet, failed parts": "/fleet?health=failed",
            f"device page, {args.days} days of samples": f"/devices/{device}?range=30d",
            "alerts (300 open)": "/alerts",
            "audit": "/audit",
        }
        print(f"reading {args.devices:,} device rows alone: {baseline:.1f} ms (baseline)")
        for name, path in pages.items():
            ms = _median_ms(get(path), args.runs)
            print(f"{name:<40} {ms:7.1f} ms  ({ms / baseline:5.1f}x the baseline)")
        engine.dispose()


if __name__ == "__main__":
    main()
