"""`kiosk hq catalogue ...` and `kiosk hq rules ...` as HQ's staff run them, against a
real broker: every change saved as a version and published signed; history, differences,
which kiosks applied what and each store's stock; bad input in one line, saving nothing;
`push-catalogue` and `push-rules` go through the same versions."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol import Catalogue, Rules, Telemetry, Topics, decode
from hq.fleet import apply_telemetry
from hq.models import DocumentVersion
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import sqlite_hq_url
from tests.hq.test_catalogue import RULES_DOC
from tests.hq.test_staff import ROOT, one_line_error
from tests.sync.helpers import client


def hq(broker, db_url: str, *args: str, keys: bool = True) -> Ran:
    where = ["--broker-port", str(broker.port), "--tls-dir", str(broker.directory)] if keys else []
    return run_kiosk("hq", "--db", db_url, *where, *args, drop_env=("HQ_",), cwd=ROOT)


def ok(done: Ran) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def versions(engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(DocumentVersion)) or 0)


def retained(broker, topic: str) -> bytes:
    """The message the broker retains on ``topic``."""
    link = client(broker, "hq", [(topic, 1)], client_id="hq-reads-retained")
    link.start()
    try:
        assert link.wait_connected(10)
        item = link.inbox.get(timeout=15)
        while isinstance(item, str):  # the link's own notices
            item = link.inbox.get(timeout=15)
        assert item.retain
        link.ack(item)
        return item.payload
    finally:
        link.close()


def test_hq_staff_keep_the_catalogue_and_rules_from_the_console(broker, tmp_path: Path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    engine = make_hq_engine(url)
    picture = io.BytesIO()
    Image.new("RGB", (400, 300), "teal").save(picture, format="PNG")
    (tmp_path / "towel.png").write_bytes(picture.getvalue())
    (tmp_path / "not-a-picture.png").write_bytes(b"<html>a page</html>")
    (tmp_path / "catalogue.json").write_text(
        json.dumps(
            {
                "gifts": [
                    {
                        "sku": "TOWEL",
                        "name": "纯棉毛巾",
                        "points_price": 300,
                        "picture_file": "towel.png",
                    },
                    {"sku": "RICE5", "name": "东北大米5kg", "points_price": 1200},
                ]
            },
            ensure_ascii=False,
        )
    )
    (tmp_path / "rules.json").write_text(json.dumps(RULES_DOC))
    try:
        # No key to sign with: refused before anything is saved.
        assert "no command key" in one_line_error(
            hq(broker, url, "catalogue", "push", str(tmp_path / "catalogue.json"), keys=False)
        )
        assert versions(engine) == 0

        pushed = ok(
            hq(broker, url, "push-catalogue", str(tmp_path / "catalogue.json"),
               "--actor", "ops-li", "--note", "spring")
        )  # fmt: skip
        assert pushed.splitlines()[0] == "catalogue v- -> v1"
        assert pushed.splitlines()[-1] == "catalogue v1 saved and published, signed"
        published = decode(Catalogue, retained(broker, Topics().catalogue()))
        assert published.version == 1 and published.signature  # signed with the command key

        changed = ok(
            hq(broker, url, "catalogue", "gift-set", "TOWEL", "--points", "350",
               "--limit", "2", "--based-on", "1", "--actor", "ops-wang")
        )  # fmt: skip
        assert changed.splitlines() == [
            "catalogue v1 -> v2",
            "  ~ TOWEL 纯棉毛巾",
            "      points_price: 300 -> 350",
            "      per_member_limit: (none) -> 2",
            "catalogue v2 saved and published, signed",
        ]
        # Made on version 1 while 2 is the newest: refused, nothing saved.
        stale = one_line_error(
            hq(broker, url, "catalogue", "gift-set", "TOWEL", "--points", "280",
               "--based-on", "1")
        )  # fmt: skip
        assert "changed meanwhile" in stale
        for args, said in [
            (("gift-set", "TOWEL", "--points", "0"), "gift TOWEL: points_price: Input should"),
            (
                ("gift-set", "TOWEL", "--picture", str(tmp_path / "not-a-picture.png")),
                "TOWEL's picture not-a-picture.png: the file is not a PNG or JPEG picture",
            ),
        ]:
            assert said in one_line_error(hq(broker, url, "catalogue", *args)), args
        assert versions(engine) == 2

        ok(hq(broker, url, "catalogue", "gift-retire", "RICE5", "--note", "season over"))
        assert ok(hq(broker, url, "catalogue", "diff", "1", "3")).splitlines() == [
            "catalogue v1 -> v3",
            "  ~ TOWEL 纯棉毛巾",
            "      points_price: 300 -> 350",
            "      per_member_limit: (none) -> 2",
            "  ~ RICE5 东北大米5kg",
            "      active: true -> false",
        ]
        history = ok(hq(broker, url, "catalogue", "history")).splitlines()
        assert [line.split()[0] for line in history[1:]] == ["3", "2", "1"]
        assert "ops-wang (cli)" in history[2] and history[3].endswith("spring")
        shown = json.loads(ok(hq(broker, url, "catalogue", "show", "--json")))
        assert shown["version"]["version"] == 3
        assert [(g["sku"], g["active"]) for g in shown["catalogue"]["gifts"]] == [
            ("TOWEL", True),
            ("RICE5", False),
        ]
        again = ok(hq(broker, url, "catalogue", "publish", "--all-pictures"))
        assert again.strip() == "catalogue v3 published with 1 picture(s), signed"

        # The rules: a whole document, then fields.
        assert "rules v1 saved and published" in ok(
            hq(broker, url, "push-rules", str(tmp_path / "rules.json"))
        )
        set_out = ok(
            hq(broker, url, "rules", "set", "points.points_per_yuan=2",
               "tiers.gold.threshold=300000", "--based-on", "1")
        )  # fmt: skip
        assert set_out.splitlines() == [
            "rules v1 -> v2",
            "  points.points_per_yuan: 1 -> 2",
            "  tiers.gold.threshold: 500000 -> 300000",
            "rules v2 saved and published, signed",
        ]
        assert decode(Rules, retained(broker, Topics().rules())).version == 2
        for setting, said in [
            ("points.per_yuan=2", "no rules field 'points.per_yuan'"),
            ("offline.max_offline_hours=0", "Rules: offline.max_offline_hours"),
        ]:
            assert said in one_line_error(hq(broker, url, "rules", "set", setting)), setting
        assert ok(hq(broker, url, "rules", "diff")).splitlines()[0] == "rules v1 -> v2"
        assert "  points.points_per_yuan: 2" in ok(hq(broker, url, "rules", "show")).splitlines()
        assert versions(engine) == 5

        # Which kiosks applied what, as their telemetry says.
        with Session(engine) as s, s.begin():
            for device, store, catalogue_v in (("K001", "S001", 3), ("K002", "S002", 2)):
                sample = Telemetry(
                    device_id=device, store_id=store, at=datetime.now(UTC), version="1",
                    uptime_s=1, outbox_depth=0, rules_version=2, catalogue_version=catalogue_v,
                )  # fmt: skip
                apply_telemetry(s, sample, datetime.now(UTC))
        applied = json.loads(ok(hq(broker, url, "catalogue", "applied", "--json")))
        assert [(c["version"], c["stores"]) for c in applied["catalogue"]] == [(3, 1), (2, 1)]
        rules_text = ok(hq(broker, url, "rules", "applied"))
        assert "v2             2 store(s), 2 kiosk(s)" in rules_text
        assert ok(hq(broker, url, "catalogue", "stock")).strip() == (
            "no stock figures from the stores yet"
        )
    finally:
        engine.dispose()
