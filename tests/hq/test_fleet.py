"""The fleet monitor as HQ staff use it: ``kiosk hq fleet`` over a live HQ's database."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from edge.protocol import DeviceStatus, StorageWear, Telemetry, Topics
from edge.protocol.link import Inbound
from edge.services.gifts import add_gift, redeem_gift
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.sync.agent import Agent
from edge.sync.health import report_peripheral
from edge.systemd import sd_notify
from hq.fleet import check_offline, fleet
from hq.models import Alert
from hq.service import HqConfig, HqService
from tests.hq.database import sqlite_hq_url
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

        def settled() -> bool:
            """The alerts are raised, and a telemetry sample taken after the outbox drained
            has arrived (one taken before says what was still pending then)."""
            view = fleet_json(tmp_path, config.database_url)
            kiosk = next(d for d in view["devices"] if d["device_id"] == "K001")
            kinds = {a["kind"] for a in view["alerts"]}
            raised = kinds >= {"printer_out_of_paper", "door_opened", "gift_low_stock"}
            return raised and kiosk["outbox_depth"] == 0

        wait_until(settled, 20, "alerts from telemetry and events", every=1.0)
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


def _sample(device_id: str, free: int, total: int) -> Inbound:
    """A telemetry message from ``device_id`` as the agent publishes it."""
    sample = Telemetry(
        device_id=device_id,
        store_id="S001",
        at=datetime.now(UTC),
        version="0.1.0",
        uptime_s=60.0,
        outbox_depth=0,
        storage=StorageWear(device="mmcblk0", free_bytes=free, total_bytes=total),
    )
    return Inbound(Topics().telemetry(device_id), sample.to_bytes(), qos=0, mid=0, retain=True)


def test_a_kiosk_clock_far_from_hqs_raises_clock_off_until_it_is_right(tmp_path):
    hq = HqService(HqConfig(database_url=sqlite_hq_url(tmp_path / "hq.db")))

    def sample(device_id: str, offset: float | None) -> Inbound:
        telemetry = Telemetry(
            device_id=device_id, store_id="S001", at=datetime.now(UTC), version="0.1.0",
            uptime_s=60.0, outbox_depth=0, clock_offset_s=offset,
        )  # fmt: skip
        return Inbound(Topics().telemetry(device_id), telemetry.to_bytes(), 0, 0, True)

    def clock_alerts() -> dict[str, str]:
        with hq.sessions() as session, session.begin():
            _rows, alerts = fleet(session, datetime.now(UTC), timedelta(hours=1))
        return {a.device_id: a.detail for a in alerts if a.kind == "clock_off"}

    hq.handle(sample("K001", 42.4))  # ahead: it would cut every member code short
    hq.handle(sample("K002", -12.0))
    hq.handle(sample("K003", 3.0))  # close enough
    hq.handle(sample("K004", None))  # not measured yet
    assert clock_alerts() == {
        "K001": "clock 42 s ahead of HQ's: check its time service (NTP)",
        "K002": "clock 12 s behind HQ's: check its time service (NTP)",
    }
    hq.handle(sample("K001", 0.2))
    assert set(clock_alerts()) == {"K002"}


def _disk_alerts(hq: HqService) -> dict[str, str]:
    with hq.sessions() as session, session.begin():
        _rows, alerts = fleet(session, datetime.now(UTC), timedelta(hours=1))
    return {a.device_id: a.detail for a in alerts if a.kind == "disk_low"}


def test_low_free_space_raises_disk_low_and_space_back_clears_it(tmp_path):
    hq = HqService(HqConfig(database_url=sqlite_hq_url(tmp_path / "hq.db")))
    gb = 1000**3
    # defaults: under the larger of 10 % and 200 MB
    hq.handle(_sample("K001", 2 * gb, 32 * gb))  # 6 %: low
    hq.handle(_sample("K002", 150 * 1000**2, 1 * gb))  # 15 %, but under 200 MB: low
    hq.handle(_sample("K003", 4 * gb, 32 * gb))  # 12 %: fine
    alerts = _disk_alerts(hq)
    assert set(alerts) == {"K001", "K002"}
    assert alerts["K001"] == "2.0 GB free of 32.0 GB (6 %), under 3.2 GB"
    assert alerts["K002"] == "150 MB free of 1.0 GB (15 %), under 200 MB"
    hq.handle(_sample("K001", 1 * gb, 32 * gb))  # still low: the one alert stays open
    hq.handle(_sample("K002", 300 * 1000**2, 1 * gb))  # space is back
    assert set(_disk_alerts(hq)) == {"K001"}
    hq.handle(_sample("K001", 8 * gb, 32 * gb))
    assert _disk_alerts(hq) == {}
    assert hq.counters.failed == 0 and hq.counters.dropped == 0


def test_the_disk_low_threshold_is_hqs_to_set(tmp_path):
    config = HqConfig(
        database_url=sqlite_hq_url(tmp_path / "hq.db"),
        disk_low_percent=0,
        disk_low_mb=100,
    )
    hq = HqService(config)
    hq.handle(_sample("K001", 150 * 1000**2, 32 * 1000**3))
    assert _disk_alerts(hq) == {}
    hq.handle(_sample("K001", 90 * 1000**2, 32 * 1000**3))
    assert set(_disk_alerts(hq)) == {"K001"}


def test_telemetry_shows_a_device_online_whose_status_hq_did_not_hear(tmp_path):
    """A worker that starts is not handed the retained status of devices (shared
    subscriptions): a device HQ last knew offline is online again by its telemetry."""
    hq = HqService(HqConfig(database_url=sqlite_hq_url(tmp_path / "hq.db")))
    went = datetime.now(UTC) - timedelta(hours=2)
    offline = DeviceStatus(
        device_id="K001", store_id="S001", role="kiosk", state="offline", at=went, version="0.1.0"
    )
    hq.handle(Inbound(Topics().status("K001"), offline.to_bytes(), qos=1, mid=0, retain=False))
    with hq.sessions() as session, session.begin():
        check_offline(session, datetime.now(UTC), timedelta(minutes=5))
    assert _open(hq, "device_offline") == ["K001"]
    hq.handle(_sample("K001", 8 * 1000**3, 32 * 1000**3))
    with hq.sessions() as session, session.begin():
        rows, _alerts = fleet(session, datetime.now(UTC), timedelta(minutes=5))
        check_offline(session, datetime.now(UTC), timedelta(minutes=5))
    assert [(r.device_id, r.state) for r in rows] == [("K001", "online")]
    assert _open(hq, "device_offline") == []


def _open(hq: HqService, kind: str) -> list[str]:
    with hq.sessions() as session:
        return list(
            session.scalars(
                select(Alert.subject).where(Alert.kind == kind, Alert.cleared_at.is_(None))
            )
        )
