"""The console in Debian's Chromium: sign in, find a device, watch it change live,
acknowledge an alert. With CONSOLE_SCREENSHOTS=DIR set, each page is saved there (the
screenshots in docs/ are made this way)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from hq import fleet
from hq.accounts import Role
from hq.models import Alert, AuditRecord
from tests.web.conftest import PASSWORD, Served, seed_fleet, telemetry

SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def shot(page: object, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(page: object, url: str, name: str = "ops") -> None:
    page.goto(url + "/fleet")  # type: ignore[attr-defined]
    page.fill("input[name=name]", name)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button.primary")  # type: ignore[attr-defined]
    page.wait_for_url(url + "/fleet")  # type: ignore[attr-defined]


def test_sign_in_find_a_device_see_it_live_and_acknowledge_its_alert(
    served: Served, browser
) -> None:
    web = served.web
    web.account("ops", Role.OPERATOR)
    seed_fleet(web, stores=4, per_store=2)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    dialogs: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.goto(served.url + "/fleet")
    shot(page, "login")
    sign_in(page, served.url)
    assert page.locator("#fleet-rows tr").count() == 8
    page.wait_for_selector("#live.on")
    shot(page, "fleet")

    # find a device: the filter keeps one row
    page.fill("input[name=q]", "K0031")
    page.click(".filters button")
    page.wait_for_url("**q=K0031**")
    assert page.locator("#fleet-rows tr").count() == 1
    page.wait_for_selector("#live.on")

    # the device's printer runs out of paper: the row changes without a reload
    with web.console.tx() as s:
        now = datetime.now(UTC)
        fleet.apply_telemetry(
            s,
            telemetry("K0031", "S003", now, outbox=321, printer="failed", printer_code="paper_out"),
            now,
        )
    expect(page.locator("#fleet-rows")).to_contain_text("321", timeout=15_000)
    assert "缺纸" in page.locator("#fleet-rows").inner_text()

    # its page: details and telemetry charts
    page.click("#fleet-rows a")
    page.wait_for_url("**/devices/K0031")
    page.wait_for_selector("canvas.chart")
    expect(page.locator("canvas.chart[data-drawn]")).to_have_count(4)
    shot(page, "device")

    # acknowledge the paper alert with a note
    page.goto(served.url + "/alerts")
    row = page.locator("tr.alert-printer_out_of_paper", has_text="K0031")
    row.locator("input[name=note]").fill("补纸后已恢复")
    shot(page, "alerts")
    row.locator("button").click()
    page.wait_for_selector(".flash.ok")
    assert page.locator("tr.alert-printer_out_of_paper", has_text="K0031").count() == 0
    page.click(".tabs a:has-text('已确认')")
    page.wait_for_url("**state=acknowledged")
    assert "补纸后已恢复" in page.locator("main").inner_text()
    with web.session() as s:
        alert = s.scalar(select(Alert).where(Alert.subject == "K0031:printer"))
        assert alert is not None and alert.acknowledged_by == "ops"
        assert alert.cleared_at is None  # still open until the paper is back
        audit = s.scalars(select(AuditRecord.action)).all()
    assert "alert.acknowledge" in audit

    page.goto(served.url + "/audit")
    assert "alert.acknowledge" in page.locator("table.audit").inner_text()
    shot(page, "audit")

    # English on a switch
    page.click("text=English")
    page.wait_for_selector("text=Sign out")
    assert page.locator("h1").inner_text() == "Audit"
    assert dialogs == []
    context.close()


def test_usable_on_a_tablet(served: Served, browser) -> None:
    web = served.web
    web.account("ops", Role.ADMIN)
    seed_fleet(web, stores=2, per_store=2)
    context = browser.new_context(viewport={"width": 820, "height": 1180}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, served.url)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 820  # the table scrolls inside its box, the page does not
    for link in page.locator("header nav a").all():
        box = link.bounding_box()
        assert box is not None and box["height"] >= 30  # a finger can hit it
    page.goto(served.url + "/accounts")
    shot(page, "accounts")
    context.close()
