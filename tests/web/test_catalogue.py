"""The catalogue page: a gift changed in the browser is signed and pushed, a kiosk's agent
applies it over a real Mosquitto, and the page shows the store on the new version."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from edge.services.gifts import list_gifts
from edge.services.pushes import CATALOGUE_VERSION
from edge.sync.agent import Agent
from hq.accounts import Role
from hq.audit import Actor
from hq.catalogue import BrokerPublisher, CatalogueDesk
from hq.models import AuditRecord
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import hq_config
from tests.sync.test_pictures import _applied, _meta, picture_file
from tests.web.conftest import Served, Web
from tests.web.test_browser import shot, sign_in


def test_change_a_gift_and_see_the_kiosk_apply_it(
    broker, tmp_path: Path, web: Web, served: Served, browser
) -> None:
    config = hq_config(broker, tmp_path / "hq", database_url=web.config.database_url)
    publisher = BrokerPublisher(config)
    web.console.config = config
    web.console.publisher = publisher
    hq = HqService(config)
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    runners = [Runner(hq.run), Runner(agent.run)]
    try:
        wait_until(lambda: agent.link.connected, 15, "the agent's link")
        desk = CatalogueDesk(hq.engine, publisher)
        desk.replace_catalogue(
            Actor("ops-li", "cli"),
            {"gifts": [{"sku": "TOWEL", "name": "纯棉毛巾", "points_price": 300},
                       {"sku": "RICE", "name": "东北大米 5kg", "points_price": 1200}]},
        )  # fmt: skip
        wait_until(lambda: _meta(app, CATALOGUE_VERSION) == 1, 15, "catalogue v1 at the kiosk")
        web.account("olga", Role.OPERATOR)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        page = context.new_page()
        sign_in(page, served.url, "olga")
        page.goto(served.url + "/catalogue")
        form = page.locator("#gift-form")
        form.locator("input[name=sku]").fill("TOWEL")
        form.locator("input[name=points_price]").fill("260")
        picture = tmp_path / "towel.png"
        picture.write_bytes(picture_file())
        form.locator("input[name=picture]").set_input_files(str(picture))
        form.locator("input[name=note]").fill("年末让利")
        form.locator("button").click()
        page.wait_for_selector(".flash.ok")
        assert "v2" in page.locator(".flash.ok").inner_text()
        wait_until(lambda: _meta(app, CATALOGUE_VERSION) == 2, 15, "catalogue v2 at the kiosk")
        assert ("TOWEL", 260) in [(g.sku, g.points_price) for g in list_gifts(app)]
        wait_until(lambda: _applied(hq.engine, "K001")[0] == 2, 20, "HQ to see v2 applied")
        page.goto(served.url + "/catalogue")
        applied = page.locator("#applied").inner_text()
        assert "2 ✓" in applied  # the store runs the newest version
        page.wait_for_selector("#gift-TOWEL img.thumb")
        shot(page, "catalogue")
        page.click("#history a:text-is('2')")
        assert "points_price: 300 -> 260" in page.locator("#diff").inner_text()
        context.close()
    finally:
        for runner in reversed(runners):
            runner.stop()
        app.close()
    with web.session() as s:
        who = s.scalars(
            select(AuditRecord.actor).where(AuditRecord.action.like("catalogue%"))
        ).all()
    assert "olga" in who
