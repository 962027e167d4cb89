"""A rollout the whole way through a real Mosquitto: HQ's service steps it and publishes the
signed ``update`` commands on its own link; real kiosk agents fetch the bundle from HQ's
``/bundles/{sha256}.bundle`` (served here through :func:`hq.bundles.bundle_file`, as the web
console does), check it and queue it, or refuse it; their answers and telemetry bring the
verdicts back to HQ.

The installer itself is not run (tests/lifecycle/test_update.py runs it on real releases):
once the bundle is queued, the agent's telemetry is made to report the new version, as the
agent restarted on it would.
"""

from __future__ import annotations

import http.server
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge import __version__
from edge.sync.agent import Agent
from hq.audit import Actor
from hq.bundles import add_bundle, bundle_file
from hq.models import Alert, FleetDevice
from hq.rollouts import RolloutPolicy, parse_ring, rollout_status, start_rollout
from hq.service import HqService, make_hq_engine
from tests.hq.test_rollouts import make_bundle
from tests.lifecycle.releases import update_key
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import hq_config

VERSION = "9.2.0"


class BundleDesk:
    """HQ's bundles over http on 127.0.0.1, each looked up as the console does."""

    def __init__(self, engine: Engine, store: Path) -> None:
        self.requests: list[tuple[str, int]] = []
        desk = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.removeprefix("/bundles/")
                path = None
                if self.path.startswith("/bundles/") and name.endswith(".bundle"):
                    with Session(engine) as session:
                        path = bundle_file(session, store, name.removesuffix(".bundle"))
                if path is None:
                    self.send_error(404)
                    desk.requests.append((self.path, 404))
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                desk.requests.append((self.path, 200))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_rollout_reaches_real_kiosks_through_the_broker(broker, tmp_path, monkeypatch):
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    store = tmp_path / "bundles"
    probe = hq_config(broker, tmp_path)
    engine = make_hq_engine(probe.database_url)
    desk = BundleDesk(engine, store)
    config = probe.model_copy(update={"bundle_base_url": desk.url, "bundle_dir": str(store)})
    try:
        _run(broker, tmp_path, engine, desk, config, store, monkeypatch)
    finally:
        desk.close()
        engine.dispose()


def _run(broker, tmp_path, engine, desk, config, store, monkeypatch) -> None:
    key, pub = update_key(tmp_path / "keys")
    bundle = make_bundle(tmp_path, VERSION, key)
    with Session(engine) as s, s.begin():
        kept = add_bundle(s, store, bundle, Actor("carol"), datetime.now(UTC), key.public_key())
    apps = []
    agents: list[Runner] = []
    for device_id, store_id, card in (("K001", "S001", 1), ("K002", "S002", 50_001)):
        data = make_data_dir(tmp_path, broker, device_id, store_id, card)
        if device_id == "K001":  # K002 has no update key: it refuses every bundle
            (data / "keys" / "hq-update.pub").write_bytes(pub.read_bytes())
        app = open_app(data)
        apps.append(app)
        agents.append(Runner(Agent(app).run))
    hq = HqService(config)
    service = Runner(hq.run)
    try:

        def fleet() -> dict[str, str]:
            with Session(engine) as s:
                rows = s.execute(
                    select(FleetDevice.device_id, FleetDevice.version).where(
                        FleetDevice.role == "kiosk"
                    )
                ).tuples()
                return dict(rows.all())

        wait_until(
            lambda: fleet() == {"K001": __version__, "K002": __version__},
            30,
            "both kiosks' telemetry at HQ",
        )
        with Session(engine) as s, s.begin():
            rollout = start_rollout(
                s,
                kept.sha256,
                parse_ring("all"),
                Actor("carol"),
                datetime.now(UTC),
                RolloutPolicy(timeout_s=600, min_attempts=5),
            ).id

        def progress() -> dict[str, tuple[str, str | None]]:
            with Session(engine) as s:
                view = rollout_status(s, rollout)
            return {d.device_id: (d.state, d.result) for d in view.devices}

        # HQ's service sends both commands; K001 fetches the bundle from HQ and queues it,
        # K002 refuses it: failed as soon as its answer reaches HQ
        wait_until(
            lambda: progress() == {"K001": ("sent", "done"), "K002": ("failed", "refused")},
            45,
            "the kiosks' answers at HQ",
        )
        sha = kept.sha256
        assert desk.requests == [(f"/bundles/{sha}.bundle", 200)]
        (queued,) = sorted((tmp_path / "K001" / "updates" / "inbox").iterdir())
        assert queued.read_bytes() == bundle.read_bytes()
        with Session(engine) as s:
            (k002,) = [d for d in rollout_status(s, rollout).devices if d.device_id == "K002"]
        assert "no_update_key" in k002.reason

        # the installer puts 9.2.0 in place and the agent, restarted, reports it
        monkeypatch.setattr("edge.sync.telemetry.__version__", VERSION)
        wait_until(lambda: progress()["K001"] == ("installed", "done"), 45, "K001 installed at HQ")
        with Session(engine) as s:
            view = rollout_status(s, rollout)
            alerts = {
                a.subject
                for a in s.scalars(
                    select(Alert).where(Alert.kind == "update_failed", Alert.cleared_at.is_(None))
                )
            }
        assert view.state == "finished"
        assert alerts == {"K002"}
        assert hq.counters.failed == 0
    finally:
        service.stop()
        for agent in agents:
            agent.stop()
        for app in apps:
            app.close()
