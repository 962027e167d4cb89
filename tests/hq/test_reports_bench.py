"""The reports' benchmark (bench/reports.py) runs end to end on a small ledger: it loads,
rebuilds, times every report and finds each one's figures equal to the ledger scan's."""

from __future__ import annotations

from bench.reports import run


def test_the_reports_benchmark_runs_small_and_its_figures_agree(postgres_url, capsys):
    results = run(entries=3_000, stores=6, members=300, runs=1, url=postgres_url)
    assert len(results) == 19
    assert all(r.agree for r in results), results
    assert all(r.rows > 0 and r.rollup_ms > 0 and r.scan_ms > 0 for r in results)
    printed = capsys.readouterr().out
    assert "every report's figures equal the ledger scan's: yes" in printed
    assert "= the members' balances" in printed and ": yes" in printed.splitlines()[-1]
