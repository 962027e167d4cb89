"""Gift pictures from HQ's catalogue, through a real broker: the kiosk fetches the pictures
its gifts name and lacks, keeps one only if it is the file the catalogue names and a real
picture, and a gift whose picture is refused or never comes shows its first character."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from PIL import Image

from edge.protocol import Catalogue, CatalogueGift, PictureRef
from edge.protocol.pictures import SHOWN
from edge.services.gifts import list_gifts
from edge.services.pictures import shown_path
from edge.station.center import gift_tile
from edge.sync.agent import Agent
from hq.commands import push_catalogue
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
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "hq", "--db", "sqlite://",
         "--broker-port", "1", "push-catalogue", str(tmp_path / "catalogue.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
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
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "hq", "--db", "sqlite://",
         "--broker-port", "1", command, str(tmp_path / "push.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
