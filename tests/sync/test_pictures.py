"""Gift pictures from HQ's catalogue, through a real broker: the kiosk fetches the pictures
its gifts name and lacks, keeps one only if it is the file the catalogue names and a real
picture, and a gift whose picture is refused or never comes shows its first character.
HQ's versioned catalogue and rules reach the kiosk signed (an unsigned one is refused), HQ
sees in the kiosk's telemetry which versions it applied, and a version saved while the
broker was down goes out when HQ's service starts again."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pytest
from PIL import Image
from sqlalchemy.orm import Session

from edge.protocol import Catalogue, CatalogueGift, PictureRef, Topics
from edge.protocol.pictures import SHOWN
from edge.services.gifts import list_gifts
from edge.services.pictures import shown_path
from edge.services.pushes import CATALOGUE_VERSION, RULES_VERSION
from edge.services.tx import get_meta
from edge.station.center import gift_tile
from edge.sync.agent import Agent
from hq.audit import Actor
from hq.catalogue import (
    CATALOGUE,
    BrokerPublisher,
    CatalogueDesk,
    applied_versions,
    checked_picture,
)
from hq.commands import publish_once, push_catalogue
from hq.service import HqService
from tests.cli_runner import run_kiosk
from tests.hq.test_catalogue import RULES_DOC
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import hq_config


def picture_file() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 800), "teal").save(out, format="JPEG", quality=85)
    return out.getvalue()


def gift(sku: str, name: str, data: bytes | None) -> CatalogueGift:
    ref = None
    if data is not None:
        ref = PictureRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return CatalogueGift(sku=sku, name=name, points_price=300, picture=ref)


def test_pictures_come_with_the_catalogue_and_forged_ones_are_refused(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    runner = Runner(agent.run)
    real = picture_file()
    forged = b"\xff\xd8\xff\xe0" + b"not a picture at all " * 20_000  # 420 kB, two chunks
    never_sent = b"a picture HQ does not publish"
    try:
        wait_until(lambda: agent.link.connected, 15, "the agent's link")
        catalogue = Catalogue(
            version=1,
            issued_at=datetime.now(UTC),
            gifts=[
                gift("TOWEL", "纯棉毛巾", real),
                gift("KETTLE", "电热水壶", forged),
                gift("RICE5", "东北大米5kg", never_sent),
                gift("OIL", "花生油", None),
            ],
        )
        # HQ's command checks a picture file before it publishes it; a forged one can still
        # come from elsewhere, and the kiosk checks it all the same
        push_catalogue(
            hq_config(broker, tmp_path),
            catalogue,
            {hashlib.sha256(d).hexdigest(): d for d in (real, forged)},
        )
        towel = hashlib.sha256(real).hexdigest()
        kettle = hashlib.sha256(forged).hexdigest()
        wait_until(lambda: shown_path(app, towel) is not None, 30, "the towel's picture")
        wait_until(lambda: kettle in agent.pictures.refused, 30, "the forged picture refused")
        kept = shown_path(app, towel)
        assert kept is not None
        with Image.open(kept) as shown:
            assert shown.format == "PNG" and max(shown.size) == SHOWN
        tiles = {line.sku: gift_tile(app, line) for line in list_gifts(app)}
        assert tiles["TOWEL"].picture.endswith(f"{towel}.png")
        assert tiles["KETTLE"].picture == tiles["RICE5"].picture == tiles["OIL"].picture == ""
        assert shown_path(app, kettle) is None and agent.pictures.kept == 1
        # the one never sent is still being waited for; nothing stopped the agent
        assert set(agent.pictures.fetching) == {hashlib.sha256(never_sent).hexdigest()}
        assert runner.error is None
    finally:
        runner.stop()
        app.close()


def test_hq_checks_a_picture_file_before_it_publishes_anything(tmp_path):
    (tmp_path / "kettle.png").write_bytes(b"<html>a page, not a picture</html>")
    (tmp_path / "catalogue.json").write_text(
        '{"version": 2, "gifts": [{"sku": "KETTLE", "name": "电热水壶", "points_price": 6000,'
        ' "picture_file": "kettle.png"}]}'
    )
    done = run_kiosk(
        "hq",
        "--db",
        "sqlite://",
        "--broker-port",
        "1",
        "push-catalogue",
        str(tmp_path / "catalogue.json"),
    )
    assert done.returncode != 0
    assert "KETTLE's picture kettle.png: the file is not a PNG or JPEG picture" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # said before any broker is tried


@pytest.mark.parametrize(
    ("command", "text", "said"),
    [
        ("push-catalogue", '{"version": 0, "gifts": []}', "Catalogue: version: Input should be"),
        ("push-catalogue", "[1, 2]", "a JSON object is expected"),
        ("push-rules", "{not json", "not a readable JSON file"),
    ],
)
def test_a_bad_push_file_is_refused_in_one_line(tmp_path, command, text, said):
    (tmp_path / "push.json").write_text(text)
    done = run_kiosk(
        "hq", "--db", "sqlite://", "--broker-port", "1", command, str(tmp_path / "push.json")
    )
    assert done.returncode == 1 and said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _meta(app, key: str) -> int:
    with app.db.read() as s:
        return int(get_meta(s, key) or 0)


def _applied(engine, device_id: str) -> tuple[int, int]:
    with Session(engine) as s:
        for d in applied_versions(s).devices:
            if d.device_id == device_id:
                return d.catalogue_version, d.rules_version
    return -1, -1


def test_a_kiosk_applies_hqs_versions_and_hq_sees_which_it_applied(broker, tmp_path):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    runners = [Runner(hq.run), Runner(agent.run)]
    desk = CatalogueDesk(hq.engine, BrokerPublisher(config))
    li = Actor("ops-li", "web")
    real = picture_file()
    try:
        wait_until(lambda: agent.link.connected, 15, "the agent's link")
        first = desk.replace_catalogue(
            li,
            {"gifts": [{"sku": "TOWEL", "name": "纯棉毛巾", "points_price": 300}]},
            pictures={"TOWEL": checked_picture(real)},
        )
        assert (first.version, first.published) == (1, True)
        rules = desk.replace_rules(li, RULES_DOC, note="2 tiers")
        assert (rules.version, rules.published) == (1, True)
        wait_until(lambda: _meta(app, CATALOGUE_VERSION) == 1, 15, "catalogue v1 at the kiosk")
        towel = hashlib.sha256(real).hexdigest()
        wait_until(lambda: shown_path(app, towel) is not None, 30, "the towel's picture")
        wait_until(lambda: _meta(app, RULES_VERSION) == 1, 15, "rules v1 at the kiosk")
        # The kiosk's telemetry tells HQ which versions it has in force.
        wait_until(lambda: _applied(hq.engine, "K001") == (1, 1), 15, "HQ to see v1 applied")

        # A catalogue HQ did not sign is refused: the signed v2 after it still applies
        # (had the forged v9 been taken, v2 would not be newer).
        forged = Catalogue(
            version=9,
            issued_at=datetime.now(UTC),
            gifts=[CatalogueGift(sku="TOWEL", name="纯棉毛巾", points_price=1)],
        )
        publish_once(config, Topics().catalogue(), forged, retain=True)
        second = desk.set_gift(li, "TOWEL", {"points_price": 280}, based_on=1)
        assert second.published
        wait_until(lambda: _meta(app, CATALOGUE_VERSION) == 2, 15, "catalogue v2 at the kiosk")
        assert [(g.sku, g.points_price) for g in list_gifts(app)] == [("TOWEL", 280)]
        wait_until(lambda: _applied(hq.engine, "K001") == (2, 1), 15, "HQ to see v2 applied")

        # The broker goes down: the edit is saved, not published, and says so.
        runners.pop(0).stop()
        broker.stop()
        third = desk.set_gift(li, "TOWEL", {"points_price": 260, "per_member_limit": 2})
        assert (third.version, third.published) == (3, False)
        assert "unreachable" in third.problem
        assert desk.history(CATALOGUE)[0].published_at is None
        broker.start()
        # HQ's service publishes it when it starts again; the kiosk takes it.
        hq = HqService(config)
        runners.insert(0, Runner(hq.run))
        wait_until(lambda: _meta(app, CATALOGUE_VERSION) == 3, 30, "catalogue v3 at the kiosk")
        assert desk.history(CATALOGUE)[0].published_at is not None
        wait_until(lambda: _applied(hq.engine, "K001") == (3, 1), 15, "HQ to see v3 applied")
        assert all(r.error is None for r in runners)
    finally:
        for runner in runners:
            runner.stop()
        app.close()
