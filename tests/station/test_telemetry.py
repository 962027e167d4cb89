"""The touchscreen's station feeds the agent's telemetry, follows HQ's pushed rules and prints
the pairing slip on first boot: a real center on SQLite and the simulators."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.printer.document import Qr
from edge.app import AppContext
from edge.config import KioskConfig
from edge.protocol import RULES_SIGNING_DOMAIN, OfflineRules, PointsRules, Rules
from edge.provisioning.enrolment import apply_enrolment, is_provisioned, verify_enrolment
from edge.provisioning.identity import device_serial
from edge.provisioning.pairing import PAIRING_FILE, code_digest
from edge.security.keys import load_private_key
from edge.services.pushes import apply_rules
from edge.station.center import KioskCenter, open_center
from edge.station.monitoring import PeripheralLog
from edge.station.seed import seed_demo
from edge.storage.sync_models import PeripheralHealth
from edge.sync.telemetry import collect
from hq.commands import sign_message
from tests.lifecycle.hq_desk import make_desk
from tests.waiting import wait_for


def _settled(center: KioskCenter) -> None:
    assert center.station.flush(), "the station's records were not written in time"


def _updated_at(app: AppContext) -> dict[str, datetime]:
    with app.db.read() as session:
        return {row.name: row.updated_at for row in session.query(PeripheralHealth)}


def test_telemetry_shows_what_the_station_saw_scans_prints_and_faults(center):
    people = seed_demo(center.app)
    sim = center.simulator
    assert sim is not None
    _settled(center)
    start = collect(center.app, None)
    assert {n: h.state for n, h in start.devices.items()} == {
        "scanner": "ok",
        "printer": "ok",
        "dispenser": "ok",
        "gpio": "ok",
    }
    assert start.last_scan_at is None and start.last_print_at is None
    assert start.camera_fps is None  # a scan engine has no frames to count
    assert start.faults == []

    scanned = threading.Event()
    codes: list[str] = []

    def read(text: str) -> None:
        codes.append(text)
        scanned.set()

    center.on_scan(read)
    before_scan = center.app.clock()
    sim.present_code(people.wang_card)
    assert scanned.wait(5) and codes == [people.wang_card]
    assert center.identify(codes[0]).card_no == people.wang_card
    assert center.print_statement(people.wang_card).printed
    _settled(center)
    # noted in memory: no commit per scan or print, they are written on the station's poll
    waiting = collect(center.app, None)
    assert waiting.last_scan_at is None and waiting.last_print_at is None
    center.station.poll()
    _settled(center)
    seen = collect(center.app, None)
    assert seen.last_scan_at is not None and seen.last_scan_at >= before_scan
    assert seen.last_print_at is not None and seen.last_print_at >= seen.last_scan_at
    assert seen.faults == []

    # a healthy kiosk polled again writes no row: the SD card is spared
    rows = _updated_at(center.app)
    center.station.poll()
    _settled(center)
    assert _updated_at(center.app) == rows

    # the dispenser jams on a registration, then the paper runs out
    sim.dispenser_jam()
    staff = center.staff_sign_in(people.clerk_id, people.clerk_pin, "replace_card")
    replaced = center.replace_lost_card(staff, people.li_card)
    assert not replaced.card.dispensed and replaced.card.dispense_problem == "jam"
    assert replaced.card.slip.printed  # the number on a slip: the last print that came out
    center.station.poll()
    _settled(center)
    last_print = collect(center.app, None).last_print_at
    sim.printer_out_of_paper()
    assert center.print_statement(people.wang_card).problem == "paper_out"
    center.device_status()  # the screen's fault banner reads health every few seconds
    _settled(center)
    faulty = collect(center.app, None)
    assert faulty.devices["dispenser"].state == "failed"
    assert faulty.devices["dispenser"].code == "jam"
    assert faulty.devices["printer"].state == "failed"
    assert faulty.devices["printer"].code == "paper_out"
    assert faulty.devices["scanner"].state == "ok"
    assert sorted(faulty.faults) == ["dispenser:jam", "printer:paper_out"]
    center.station.poll()
    _settled(center)
    assert last_print is not None and last_print > seen.last_print_at
    assert collect(center.app, None).last_print_at == last_print  # paper out: nothing printed

    # a staff member clears both faults; the fleet view sees the kiosk healthy again
    clerk = center.staff_sign_in(people.clerk_id, people.clerk_pin, "clear_fault")
    assert all(s.ok for s in center.clear_faults(clerk))
    _settled(center)
    healed = collect(center.app, None)
    assert healed.faults == []
    assert {h.state for h in healed.devices.values()} == {"ok"}


def test_the_health_poll_records_a_change_nobody_else_saw(tmp_path):
    center = open_center(tmp_path / "data", simulate=True, health_poll_s=0.2)
    try:
        sim = center.simulator
        assert sim is not None
        _settled(center)
        sim.dispenser_empty()  # nobody dispenses or reads health: only the poll can see it
        wait_for(
            lambda: collect(center.app, None).devices["dispenser"].code == "empty",
            what="the poll to record the empty dispenser",
        )
    finally:
        center.close()


def test_the_self_test_records_what_health_reads(tmp_path):
    # a poll an hour away: only the self-test can record the paper running out
    center = open_center(tmp_path / "data", simulate=True, health_poll_s=3600)
    try:
        sim = center.simulator
        assert sim is not None
        _settled(center)
        rows = _updated_at(center.app)
        sim.printer_out_of_paper()
        lines = {line.device: line for line in center.self_test()}
        assert lines["printer"].code == "paper_out"
        _settled(center)
        printer = collect(center.app, None).devices["printer"]
        assert printer.code == "paper_out"
        assert printer.reason == "printer is out of paper"  # health's reason, not a detail
        # only the printer changed: the self-test's other findings leave the rows alone
        after = _updated_at(center.app)
        assert {name for name in after if after[name] != rows[name]} == {"printer"}
        # the same health read again (the screen's banner) writes nothing more
        center.device_status()
        _settled(center)
        assert _updated_at(center.app) == after
    finally:
        center.close()


def test_health_the_screen_reads_is_recorded_and_spares_the_poll_a_read(tmp_path):
    poll_s = 1.5
    center = open_center(tmp_path / "data", simulate=True, health_poll_s=poll_s)
    try:
        sim = center.simulator
        assert sim is not None
        _settled(center)
        sim.printer_out_of_paper()
        read_at = time.monotonic()
        statuses = {s.device: s for s in center.device_status()}  # as the screen reads it
        sim.dispenser_empty()
        _settled(center)
        assert statuses["printer"].code == "paper_out"
        assert collect(center.app, None).devices["printer"].code == "paper_out"
        # the health was just read: the station's poll does not read it again before a whole
        # poll interval has passed, so the dispenser emptied since stays unrecorded for now
        time.sleep(poll_s * 0.4)
        _settled(center)
        assert time.monotonic() - read_at < poll_s, "the machine was too slow to tell"
        assert collect(center.app, None).devices["dispenser"].code == ""
        # once nobody has read it for an interval, the poll does
        wait_for(
            lambda: collect(center.app, None).devices["dispenser"].code == "empty",
            what="the poll to read health on its own",
        )
    finally:
        center.close()


def test_the_camera_frame_rate_is_counted_over_a_window_and_recorded(tmp_path):
    # the default hardware is all simulators, the scanner a camera (an empty grey desk at
    # 30 frames a second); every device is "real" to the station, so no pairing slip here
    config = KioskConfig()
    assert config.hardware.scanner.backend == "sim"
    center = open_center(
        tmp_path / "data",
        simulate=False,
        config=config,
        pairing_on_first_boot=False,
        fps_window_s=1.0,
    )
    try:
        center.on_scan(lambda text: None)

        def recorded_fps():
            _settled(center)
            return collect(center.app, None).camera_fps

        fps = wait_for(recorded_fps, what="a frame rate recorded", every=0.2)
        assert 5.0 < fps <= 35.0
    finally:
        center.close()


def test_the_frame_rate_is_written_only_when_its_whole_number_changes(tmp_path):
    app = AppContext.open(tmp_path / "data")
    try:
        records = PeripheralLog(app)
        assert records.camera_fps(29.62)
        assert collect(app, None).camera_fps == pytest.approx(29.62)
        assert not records.camera_fps(30.38)  # still 30 a second: the SD card is spared
        assert collect(app, None).camera_fps == pytest.approx(29.62)
        assert records.camera_fps(24.9)
        assert collect(app, None).camera_fps == pytest.approx(24.9)
        # after a restart the recorded rate is known: the same rate writes nothing
        again = PeripheralLog(app)
        assert not again.camera_fps(25.3)
        assert again.camera_fps(12.0)
        assert collect(app, None).camera_fps == pytest.approx(12.0)
    finally:
        app.close()


def test_the_last_scan_and_print_noted_since_the_last_poll_are_written_at_close(tmp_path):
    data = tmp_path / "data"
    center = open_center(data, simulate=True, health_poll_s=3600)  # no poll meanwhile
    try:
        people = seed_demo(center.app)
        sim = center.simulator
        assert sim is not None
        scanned = threading.Event()
        center.on_scan(lambda _text: scanned.set())
        before = center.app.clock()
        sim.present_code(people.wang_card)
        assert scanned.wait(5)
        assert center.print_statement(people.wang_card).printed
        _settled(center)
        assert collect(center.app, None).last_scan_at is None
    finally:
        center.close()  # what was noted since the last poll is written on the way out
    app = AppContext.open(data)
    try:
        closed = collect(app, None)
        assert closed.last_scan_at is not None and closed.last_scan_at >= before
        assert closed.last_print_at is not None and closed.last_print_at >= closed.last_scan_at
    finally:
        app.close()


def test_with_the_default_window_the_rate_waits_a_minute(tmp_path):
    center = open_center(
        tmp_path / "data", simulate=False, config=KioskConfig(), pairing_on_first_boot=False
    )
    try:
        center.on_scan(lambda text: None)
        time.sleep(1.5)
        _settled(center)
        assert collect(center.app, None).camera_fps is None
    finally:
        center.close()


HQ_KEY = Ed25519PrivateKey.generate()


def _rules(version: int, checkin: int, cap: int) -> Rules:
    return sign_message(HQ_KEY, RULES_SIGNING_DOMAIN, _unsigned(version, checkin, cap))


def _unsigned(version: int, checkin: int, cap: int) -> Rules:
    return Rules(
        version=version,
        issued_at=datetime.now(UTC),
        points=PointsRules(
            points_per_yuan=2,
            expiry_months=12,
            pending_days=0,
            checkin_points=checkin,
            birthday_bonus_points=100,
            referral_bonus_points=50,
        ),
        offline=OfflineRules(
            offline_after_s=300,
            max_points_per_redemption=cap,
            max_points_per_member=5_000,
            max_points_per_device=50_000,
            max_offline_hours=24,
        ),
    )


def test_rules_the_agent_stores_take_effect_in_the_touchscreen_without_a_restart(center):
    people = seed_demo(center.app)
    default = center.app.config.points.checkin_points
    agent = AppContext.open(center.app.data_dir)  # the sync agent's own process
    try:
        assert apply_rules(agent, _rules(1, default + 37, 1_500), HQ_KEY.public_key()).applied
        assert center.app.config.points.checkin_points == default  # not before the poll
        # after the station's next poll, the next operation that earns points sees the
        # version the agent stored
        center.station.poll()
        assert center.check_in(people.li_card).points == default + 37
        assert center.app.offline_limit.max_points_per_redemption == 1_500
        # a later push is picked up by the health poll, before anyone touches the screen
        assert apply_rules(agent, _rules(2, 3, 900), HQ_KEY.public_key()).applied
        center.station.poll()
        assert center.app.config.points.checkin_points == 3
        assert center.app.config.points.points_per_yuan == 2
        assert center.app.offline_limit.max_points_per_redemption == 900
        assert center.check_in(people.wang_card).points == 3
        assert not center.follow_hq_rules()  # nothing newer: nothing done
    finally:
        agent.close()


def test_the_station_worker_puts_a_push_in_force_within_one_poll(tmp_path):
    center = open_center(tmp_path / "data", simulate=True, health_poll_s=0.3)
    agent = AppContext.open(center.app.data_dir)
    try:
        assert apply_rules(agent, _rules(1, 29, 1_100), HQ_KEY.public_key()).applied
        wait_for(
            lambda: center.app.config.points.checkin_points == 29,
            what="the worker's poll to follow the push",
        )
        assert center.app.offline_limit.max_points_per_redemption == 1_100
        assert not center.follow_hq_rules()
    finally:
        agent.close()
        center.close()


def test_stored_rules_are_in_force_from_the_start(tmp_path):
    data = tmp_path / "data"
    agent = AppContext.open(data)
    try:
        assert apply_rules(agent, _rules(4, 11, 700), HQ_KEY.public_key()).applied
    finally:
        agent.close()
    center = open_center(data, simulate=True)
    try:
        assert center.app.config.points.checkin_points == 11
        assert center.app.offline_limit.max_points_per_redemption == 700
    finally:
        center.close()


def _open_first_boot(data: Path) -> KioskCenter:
    center = open_center(data, simulate=True, pairing_on_first_boot=True)
    _settled(center)
    return center


def _serial_and_code(qr_text: str) -> tuple[str, str]:
    """The slip's QR as HQ reads it: ``MCKPAIR1:<serial>:<code>:<certificate request>``."""
    prefix, serial, code, request = qr_text.split(":", 3)
    assert prefix == "MCKPAIR1" and request
    return serial, code


def _pairing_qr(center: KioskCenter) -> str:
    sim = center.station.sim
    assert sim is not None
    (slip,) = [r for r in sim.printer.printed if r.title == "pairing-slip"]
    (qr,) = [step for step in slip.steps if isinstance(step, Qr)]
    return qr.data


def test_first_boot_prints_the_pairing_slip_once_and_not_once_provisioned(tmp_path):
    data = tmp_path / "data"
    center = _open_first_boot(data)
    try:
        assert center.simulator is not None
        assert center.simulator.receipts() == ["pairing-slip"]
        qr_text = _pairing_qr(center)
        serial, code = _serial_and_code(qr_text)
        assert serial == device_serial()
        pending = json.loads((data / PAIRING_FILE).read_text())
        assert pending["code_sha256"] == code_digest(code)
        sim = center.station.sim
        assert sim is not None
        raw = bytes(sim.printer.output)  # what went to the printer: the serial and the QR
        assert serial.encode() in raw and qr_text.encode() in raw
    finally:
        center.close()

    again = _open_first_boot(data)  # a restart while that code is pending prints nothing
    try:
        assert again.simulator is not None and again.simulator.receipts() == []
    finally:
        again.close()

    desk = make_desk(tmp_path, tmp_path / "ca")
    issued = desk.enrol(qr_text, store_id="S007", device_id="K070", out_dir=tmp_path / "out")
    enrol_public = load_private_key(desk.settings.enrol_key).public_key()
    apply_enrolment(data, verify_enrolment(issued.bundle_path.read_bytes(), enrol_public))
    assert is_provisioned(data) and not (data / PAIRING_FILE).exists()
    provisioned = _open_first_boot(data)
    try:
        assert provisioned.simulator is not None and provisioned.simulator.receipts() == []
        assert provisioned.app.device_id == "K070"
    finally:
        provisioned.close()


def test_a_slip_that_did_not_print_is_printed_at_the_next_start(tmp_path):
    data = tmp_path / "data"
    center = open_center(data, simulate=True)  # simulators: no slip of its own accord
    try:
        assert center.simulator is not None
        center.simulator.printer_out_of_paper()
        outcome = center.print_pairing_slip()  # the technician's button
        assert (outcome.printed, outcome.problem) == (False, "paper_out")
        assert (data / PAIRING_FILE).exists()
    finally:
        center.close()
    pending = json.loads((data / PAIRING_FILE).read_text())
    restarted = _open_first_boot(data)
    try:
        assert restarted.simulator is not None
        assert restarted.simulator.receipts() == ["pairing-slip"]
        _serial, code = _serial_and_code(_pairing_qr(restarted))
        now_pending = json.loads((data / PAIRING_FILE).read_text())
        assert now_pending["code_sha256"] == code_digest(code) != pending["code_sha256"]
    finally:
        restarted.close()
    # the slip came out this time: the next start leaves the pending code alone
    quiet = _open_first_boot(data)
    try:
        assert quiet.simulator is not None and quiet.simulator.receipts() == []
    finally:
        quiet.close()
