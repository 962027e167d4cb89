"""Reports in the console: a chain's events through HQ's real ingest, a report run in the
browser, its figures checked against sums the test takes from the ledger itself; its CSV;
and the Prometheus figures."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hq.accounts import Role
from hq.ledger import CentralLedger
from hq.models import CentralEntry, CentralMember
from tests.hq.database import HQ_VAULT
from tests.hq.reconcile import START, make_chain
from tests.web.conftest import Served, Web
from tests.web.test_browser import shot, sign_in

EARNING = ("purchase", "checkin", "birthday", "referral")


def ingest_chain(web: Web, seed: int = 7) -> None:
    chain = make_chain(seed)
    ledger = CentralLedger(timedelta(minutes=10), HQ_VAULT)
    for device, batch in chain.deliveries:
        with Session(web.console.engine) as s, s.begin():
            result = ledger.ingest(s, device, batch, web.clock())
        assert not result.gap and not result.quarantined


def test_run_a_report_and_its_figures_are_the_ledgers(served: Served, browser) -> None:
    web = served.web
    ingest_chain(web)
    web.account("vera", Role.VIEWER)
    first, last = START.date(), (START + timedelta(days=40)).date()
    with web.session() as s:
        issued = s.scalar(
            select(func.coalesce(func.sum(CentralEntry.points), 0)).where(
                CentralEntry.kind.in_(EARNING),
                CentralEntry.at >= START,
                CentralEntry.at < START + timedelta(days=41),
            )
        )
        outstanding = s.scalar(select(func.sum(CentralMember.balance)))
    assert issued is not None and issued > 0
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, served.url, "vera")
    page.goto(f"{served.url}/reports?report=points&from={first}&to={last}")
    page.wait_for_selector("canvas.chart[data-drawn]")
    table = page.locator("#report-table")
    headers = table.locator("thead th").all_inner_texts()
    column = headers.index("发放")
    daily = [
        int(cells[column].replace(",", ""))
        for cells in (
            row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all()
        )
    ]
    assert sum(daily) == issued  # the page's figures are the ledger's
    shot(page, "reports")
    # the chain's liability on the last day is what its members hold
    page.goto(f"{served.url}/reports?report=outstanding&from={first}&to={last}")
    last_row = page.locator("#report-table tbody tr").last.locator("td").all_inner_texts()
    assert int(last_row[-1].replace(",", "")) == outstanding
    # the CSV is the same table
    csv = page.request.get(f"{served.url}/reports.csv?report=points&from={first}&to={last}")
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text().strip().splitlines()
    index = lines[0].split(",").index("issued")
    assert sum(int(line.split(",")[index]) for line in lines[1:]) == issued
    context.close()


def test_a_bad_report_request_says_why(web: Web) -> None:
    web.account("vera", Role.VIEWER)
    client = web.client("vera")
    for query, said in (
        ("report=nonsense", "no report"),
        ("report=points&from=2026-13-01", "2026-13-01"),
        ("report=points&from=2026-03-01&to=2026-02-01", ""),
        ("report=points&store=S999", "S999"),
        ("report=outstanding&by=store", "not store"),
    ):
        response = client.get(f"/reports?{query}")
        assert response.status_code == 200
        assert 'class="flash error"' in response.text, query
        assert said in response.text
        assert client.get(f"/reports.csv?{query}").status_code in (400, 404)


def test_prometheus_figures(web: Web) -> None:
    from tests.web.conftest import seed_fleet

    seed_fleet(web, stores=2)
    client = web.client()
    text = client.get("/metrics").text
    assert re.search(r"^# TYPE \w+ gauge$", text, re.M)
    assert re.search(r'^\w+\{role="kiosk",state="online"\} 4(\.0)?$', text, re.M), text
    web.console.metrics_token = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", headers={"authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and "version=0.0.4" in ok.headers["content-type"]
