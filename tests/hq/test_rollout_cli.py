"""`kiosk hq rollout ...` as HQ's operations staff run it against a real broker: upload a
bundle, start a rollout on a store, step it (the command reaches the kiosk's topic), halt,
resume, widen, cancel; every change in the audit log; bad input in one line."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.cli.main import cli
from edge.protocol import Command, Topics, decode
from hq.models import AuditRecord
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import sqlite_hq_url
from tests.hq.test_rollouts import T0, make_bundle, report, status
from tests.hq.test_staff import ROOT, one_line_error
from tests.lifecycle.releases import update_key
from tests.sync.helpers import client, received

BASE_URL = "https://hq.example.net"


def rollout(broker, db_url: str, *args: str) -> Ran:
    return run_kiosk(
        "hq", "--db", db_url, "--broker-port", str(broker.port), "--tls-dir",
        str(broker.directory), "--bundle-base-url", BASE_URL, "rollout", *args,
        drop_env=("HQ_",), cwd=ROOT,
    )  # fmt: skip


def ok(proc: Ran) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_operations_staff_roll_an_update_out_from_the_console(broker, tmp_path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    engine = make_hq_engine(url)
    key, pub = update_key(tmp_path)
    bundle = make_bundle(tmp_path, "9.1.0", key)
    for device_id, store_id in (("K001", "S001"), ("K003", "S001"), ("K002", "S002")):
        report(engine, device_id, "1.0.0", T0, store_id=store_id)
    status(engine, "L1", "online", T0, role="lane")
    who = ("--actor", "carol")
    try:
        junk = tmp_path / "junk.tar"
        junk.write_bytes(b"junk")
        refused = one_line_error(
            rollout(broker, url, "upload", str(junk), "--update-key", str(pub))
        )
        assert "junk.tar is not an update bundle" in refused
        unsigned = one_line_error(rollout(broker, url, "upload", str(bundle)))
        assert "no update key" in unsigned  # none in the broker's folder, none given

        kept = json.loads(
            ok(
                rollout(
                    broker, url, "upload", str(bundle), "--update-key", str(pub), *who, "--json"
                )
            )
        )
        sha = kept["sha256"]
        assert (kept["version"], kept["uploaded_by"]) == ("9.1.0", "carol")
        assert (tmp_path / "bundles" / f"{sha}.bundle").read_bytes() == bundle.read_bytes()
        (listed,) = json.loads(ok(rollout(broker, url, "bundles", "--json")))
        assert listed["sha256"] == sha

        assert "--ring" in rollout(broker, url, "start", "--bundle", sha, "--ring", "half").stderr
        started = json.loads(
            ok(rollout(broker, url, "start", "--bundle", sha[:12], "--ring", "store:S001",
                       "--in-flight", "1", *who, "--json"))
        )  # fmt: skip
        assert (started["id"], started["state"], started["ring"]) == (1, "running", "store:S001")
        assert [d["device_id"] for d in started["devices"]] == ["K001", "K003"]
        again = one_line_error(rollout(broker, url, "start", "--bundle", sha, "--ring", "all"))
        assert "rollout 1 (9.1.0, store:S001) is running" in again

        # a step sends the first kiosk its signed command, on the kiosk's own topic
        kiosk = client(broker, "K001", [(Topics().command("K001"), 1)], client_id="K001-reads")
        kiosk.start()
        assert kiosk.wait_connected(15)
        try:
            stepped = json.loads(ok(rollout(broker, url, "step", "--json")))
            assert stepped["sent"] == [[1, "K001"]]
            (arrived,) = [m for m in received(kiosk, 3) if m.topic == Topics().command("K001")]
        finally:
            kiosk.close()
        command = decode(Command, arrived.payload)
        assert (command.command, command.device_id) == ("update", "K001")
        assert command.args["url"] == f"{BASE_URL}/bundles/{sha}.bundle"
        assert arrived.response_topic == Topics().command_result("K001")
        assert arrived.correlation == command.transaction.encode()

        shown = json.loads(ok(rollout(broker, url, "status", "1", "--json")))
        assert {d["device_id"]: d["state"] for d in shown["devices"]} == {
            "K001": "sent",
            "K003": "pending",
        }
        assert "K001" in ok(rollout(broker, url, "status", "1"))
        assert "rollout 1: 9.1.0" in ok(rollout(broker, url, "status"))

        assert "halted" in ok(rollout(broker, url, "halt", "1", "--reason", "a look", *who))
        assert "--reason" in rollout(broker, url, "halt", "1").stderr
        assert "running" in ok(rollout(broker, url, "resume", "1", *who))
        assert "is running, not halted" in one_line_error(rollout(broker, url, "resume", "1"))
        widened = json.loads(ok(rollout(broker, url, "widen", "1", "--ring", "all", *who,
                                        "--json")))  # fmt: skip
        assert sorted(d["device_id"] for d in widened["devices"]) == ["K001", "K002", "K003"]
        assert "cancelled" in ok(rollout(broker, url, "cancel", "1", *who))
        assert "no rollout 7" in one_line_error(rollout(broker, url, "cancel", "7"))
    finally:
        engine.dispose()
    with Session(make_hq_engine(url)) as s:
        rows = [
            (r.actor, r.source, r.action, r.subject)
            for r in s.scalars(select(AuditRecord).order_by(AuditRecord.id))
        ]
    assert rows == [
        ("carol", "cli", "bundle.upload", f"bundle:{sha}"),
        ("carol", "cli", "rollout.start", "rollout:1"),
        ("carol", "cli", "rollout.halt", "rollout:1"),
        ("carol", "cli", "rollout.resume", "rollout:1"),
        ("carol", "cli", "rollout.widen", "rollout:1"),
        ("carol", "cli", "rollout.cancel", "rollout:1"),
    ]


def test_a_rollout_needs_a_bundle_base_url_and_the_commands_help_reads_without_one(
    broker, tmp_path
):
    url = sqlite_hq_url(tmp_path / "hq.db")
    no_url = run_kiosk(
        "hq", "--db", url, "--tls-dir", str(broker.directory), "rollout",
        "start", "--bundle", "0" * 64, "--ring", "all", drop_env=("HQ_",), cwd=ROOT,
    )  # fmt: skip
    assert "no bundle_base_url" in one_line_error(no_url)
    runner = CliRunner()
    for command in ("upload", "start", "status", "widen", "halt", "resume", "cancel", "step"):
        helped = runner.invoke(cli, ["hq", "rollout", command, "--help"])
        assert helped.exit_code == 0 and "Usage:" in helped.output, helped.output
