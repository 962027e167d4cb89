"""The fleet monitor as HQ staff use it: ``kiosk hq fleet`` over a live HQ's database."""

from __future__ import annotations

import socket

from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.sync.agent import Agent
from edge.sync.health import report_peripheral
from edge.sync.watchdog import sd_notify
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import fleet_json, hq_config, pending


def test_fleet_shows_devices_health_and_alerts(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    config = hq_config(broker, tmp_path, clone_window_min=10)
    hq = HqService(config)
    runners = [Runner(hq.run), Runner(Agent(app).run)]
    try:
        report_peripheral(app, "printer", "failed", "paper_out", "printer is out of paper")
        report_peripheral(app, "panel", "degraded", "door_open", "cabinet door is open")
        add_gift(app, "TEA", "Tea", points=10, stock=2, low_stock=1)
        reg = register_member(app, "13500000001", consent=True)
        accrue_purchase(app, reg.card_no, 10_000, "R-1")
        redeem_gift(app, reg.card_no, "TEA")  # stock 1: low
        wait_until(lambda: pending(app) == 0, 20, "events at HQ")
        wait_until(lambda: hq.counters.handled > 5, 10, "telemetry")
        view = fleet_json(tmp_path, config.database_url)
        wait_until(
            lambda: (
                {a["kind"] for a in fleet_json(tmp_path, config.database_url)["alerts"]}
                >= {"printer_out_of_paper", "door_opened", "gift_low_stock"}
            ),
            20,
            "alerts from telemetry and events",
            every=1.0,
        )
        view = fleet_json(tmp_path, config.database_url)
        kiosk = next(d for d in view["devices"] if d["device_id"] == "K001")
        assert kiosk["state"] == "online" and kiosk["health"] == "failed"
        assert kiosk["outbox_depth"] == 0 and kiosk["version"]
        assert "printer:paper_out" in kiosk["faults"]
    finally:
        runners[1].stop()
        app.close()
    # The agent said offline on its way out; past the threshold that is an alert.
    wait_until(
        lambda: (
            "device_offline"
            in {a["kind"] for a in fleet_json(tmp_path, config.database_url)["alerts"]}
        ),
        20,
        "the offline alert",
        every=1.0,
    )
    runners[0].stop()


def test_sd_notify_reaches_the_socket(tmp_path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(64) == b"READY=1"
    assert not sd_notify("READY=1", {})
