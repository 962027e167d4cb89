"""Card dispenser contract over the virtual unit (and a real one when present), with faults."""

from __future__ import annotations

import os
import time

import pytest

from drivers.dispenser import (
    CardDispenser,
    DispenseError,
    DispenserStatus,
    SerialDispenser,
    VirtualDispenserLink,
    frame,
    unframe,
)
from drivers.errors import DeviceTimeoutError, DeviceUnavailableError, ProtocolError
from drivers.health import HealthState
from drivers.serialio import open_serial

REAL_PORT = os.environ.get("KIOSK_TEST_DISPENSER", "")


@pytest.fixture(params=["virtual", pytest.param("real", marks=pytest.mark.hardware)])
def dispenser(request):
    if request.param == "real":
        if not REAL_PORT:
            pytest.skip("no dispenser attached (set KIOSK_TEST_DISPENSER to its port)")
        unit = SerialDispenser(open_serial(REAL_PORT, 9600, 3.0), 3.0)
    else:
        unit = SerialDispenser(VirtualDispenserLink(cards=10), timeout_s=0.3)
    yield unit
    unit.close()


def test_contract_dispense_puts_a_card_at_the_mouth(dispenser):
    assert dispenser.status().card_at_mouth is False
    dispenser.dispense()
    assert dispenser.status().card_at_mouth is True
    with pytest.raises(DispenseError) as raised:  # the customer has not taken it yet
        dispenser.dispense()
    assert raised.value.health.code == "card_waiting"


def test_contract_health_is_ok_when_stocked(dispenser):
    assert dispenser.health().state is HealthState.OK


def test_frame_and_checksum():
    assert frame("ST") == b"\x02ST\x03" + bytes([ord("S") ^ ord("T") ^ 3])
    assert unframe(frame("S0100")) == "S0100"
    with pytest.raises(ProtocolError):
        unframe(b"\x02ST\x03\x00")
    with pytest.raises(ProtocolError):
        unframe(b"\xff\xfe")


def test_low_then_empty():
    link = VirtualDispenserLink(cards=2, low_at=2)
    unit = SerialDispenser(link, 0.3)
    assert unit.health().code == "low"
    assert unit.health().state is HealthState.DEGRADED
    for _ in range(2):
        unit.dispense()
        link.take_card()
    assert unit.health().code == "empty"
    with pytest.raises(DispenseError) as raised:
        unit.dispense()
    assert raised.value.health.code == "empty"
    assert raised.value.health.state is HealthState.FAILED


def test_jam_fails_until_reset():
    link = VirtualDispenserLink()
    unit = SerialDispenser(link, 0.3)
    link.jam_next = True
    with pytest.raises(DispenseError) as raised:
        unit.dispense()
    assert raised.value.health.code == "jam"
    assert unit.health().state is HealthState.FAILED
    unit.reset()
    unit.dispense()
    assert unit.status() == DispenserStatus(True, False, False, False)


def test_one_garbled_reply_is_retried_two_fail():
    link = VirtualDispenserLink()
    unit = SerialDispenser(link, 0.3)
    link.garbage = 1
    assert unit.status().empty is False
    link.garbage = 2
    with pytest.raises(ProtocolError):
        unit.status()
    assert unit.health().state is HealthState.OK  # line noise passed


def test_silent_unit_times_out_and_does_not_block():
    link = VirtualDispenserLink()
    link.silent = True
    unit = SerialDispenser(link, 0.2)
    start = time.monotonic()
    with pytest.raises(DeviceTimeoutError):
        unit.dispense()
    assert time.monotonic() - start < 1.0
    assert unit.health().code == "no_answer"


def test_unplugged_unit_is_disconnected():
    link = VirtualDispenserLink()
    unit = SerialDispenser(link, 0.2)
    link.unplug()
    with pytest.raises(DeviceUnavailableError):
        unit.dispense()
    assert unit.health().code == "disconnected"


def test_open_serial_refuses_missing_port_and_opens_loop_url():
    with pytest.raises(DeviceUnavailableError) as raised:
        open_serial("/dev/serial/by-id/usb-nothing-here", 9600, 0.1)
    assert raised.value.health.code == "disconnected"
    link = open_serial("loop://", 9600, 0.1)
    link.write(b"ping\r")
    assert link.read_until(b"\r") == b"ping\r"
    link.close()


def test_contract_reset_answers_and_leaves_a_working_dispenser(dispenser):
    dispenser.reset()
    assert dispenser.health().state is HealthState.OK
    dispenser.dispense()
    assert dispenser.status().card_at_mouth is True


def test_reset_is_part_of_the_interface():
    assert "reset" in CardDispenser.__abstractmethods__

    class NoReset(CardDispenser):
        def dispense(self) -> None: ...
        def status(self) -> DispenserStatus:
            return DispenserStatus(False, False, False, False)

        def close(self) -> None: ...

    with pytest.raises(TypeError, match="reset"):
        NoReset()  # type: ignore[abstract]
