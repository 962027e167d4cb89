"""The console's reports (:mod:`hq.reports`, the functions ``kiosk hq report`` calls), each
as a chart and a table with its CSV, and the Prometheus figures (:mod:`hq.metrics`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from edge.domain.errors import KioskError
from hq import reports
from hq.metrics import fleet_metrics
from hq.web.core import Console, Page
from hq.web.i18n import N_

# What each report's chart draws (the table has every figure).
CHART_MEASURES: dict[str, tuple[str, ...]] = {
    "points": ("issued", "redeemed", "expired"),
    "outstanding": ("outstanding",),
    "gifts": ("quantity",),
    "members": ("total", "joined"),
    "checkins": ("checkins",),
}
TITLES = {
    "points": N_("Points issued, redeemed and expired"),
    "outstanding": N_("Points outstanding (the chain's liability)"),
    "gifts": N_("Redemptions by gift"),
    "members": N_("Member growth"),
    "checkins": N_("Check-ins"),
}
GROUPINGS = (
    ("", N_("as the report is")),
    ("day", N_("by day")),
    ("store", N_("by store")),
    ("tier", N_("by tier")),
    ("day,store", N_("by day and store")),
    ("store,tier", N_("by store and tier")),
)
MAX_SERIES = 8  # lines a chart draws; the table has them all
MAX_TABLE_ROWS = 2000


def _form(page: Page | Request) -> dict[str, str]:
    params = page.request.query_params if isinstance(page, Page) else page.query_params
    return {
        "report": params.get("report", "points")[:20],
        "from": params.get("from", "")[:10],
        "to": params.get("to", "")[:10],
        "store": params.get("store", "").strip()[:64],
        "by": params.get("by", "")[:40],
    }


def _run(session: Any, form: dict[str, str], today: Any) -> reports.Report[Any]:
    span = reports.period(form["from"] or None, form["to"] or None, today)
    by = tuple(b for b in form["by"].split(",") if b) or None
    return reports.run_report(session, form["report"], span, form["store"] or None, by)


def chart_data(report: reports.Report[Any], t: Any = lambda text: text) -> dict[str, Any]:
    """The chart's labels and lines: each measure of the report along its first dimension
    when it has one line, else the first measure, one line a group (the largest first)."""
    measures = CHART_MEASURES.get(report.name, ())
    measures = tuple(m for m in measures if m in report.columns)
    if not report.rows or not measures:
        return {"labels": [], "groups": {"main": []}, "kind": "line"}
    per_measure = {m: report.series(m) for m in measures}
    first = per_measure[measures[0]]
    xs = sorted({x for line in first.values() for x, _ in line}, key=str)
    labels = [str(x) for x in xs]
    lines: dict[str, dict[Any, int]] = {}
    if len(first) == 1:
        for m in measures:
            (points,) = per_measure[m].values()
            lines[t(m)] = dict(points)
    else:
        totals = sorted(first.items(), key=lambda kv: -sum(v for _, v in kv[1]))
        for name, points in totals[:MAX_SERIES]:
            lines[name or "—"] = dict(points)
    kind = "line" if report.columns and report.columns[0] == "day" else "bar"
    return {
        "labels": labels,
        "groups": {
            "main": {name: [values.get(x, 0) for x in xs] for name, values in lines.items()}
        },
        "kind": kind,
    }


def report_routes(console: Console) -> list[BaseRoute]:
    def reports_page(page: Page) -> Response:
        form = _form(page)
        error = ""
        report = None
        today = page.now.astimezone(UTC).date()
        try:
            report = _run(page.session, form, today)
        except KioskError as exc:
            error = page.t(exc.message)
        query = urlencode({k: v for k, v in form.items() if v})
        return page.render(
            "reports.html",
            form=form,
            names=list(reports.REPORTS),
            titles=TITLES,
            groupings=GROUPINGS,
            report=report,
            rows=report.table()[:MAX_TABLE_ROWS] if report else [],
            more=max(0, len(report.rows) - MAX_TABLE_ROWS) if report else 0,
            chart=chart_data(report, page.t) if report else None,
            error=error,
            csv_link=f"/reports.csv?{query}",
            default_from=(today - timedelta(days=29)).isoformat(),
            default_to=today.isoformat(),
        )

    def report_csv(page: Page) -> Response:
        form = _form(page)
        report = _run(page.session, form, page.now.astimezone(UTC).date())
        name = f"{report.name}-{report.period.start}-{report.period.end}.csv"
        return Response(
            report.csv(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def metrics(request: Request) -> Response:
        """Prometheus text format: fleet and ingest figures for the chain's Grafana."""
        token = console.metrics_token
        if token and request.headers.get("authorization", "") != f"Bearer {token}":
            return PlainTextResponse("a bearer token is needed\n", status_code=401)

        def read() -> str:
            with console.tx() as session:
                return fleet_metrics(session, datetime.now(UTC))

        text = await run_in_threadpool(read)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("/reports", console.view(reports_page)),
        Route("/reports.csv", console.view(report_csv)),
        Route("/metrics", metrics),
    ]
