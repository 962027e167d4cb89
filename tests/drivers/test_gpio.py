"""GPIO panel on gpiozero's MockFactory, passed in explicitly (no global pin factory)."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from drivers.gpio import GpioPanel, SimulatedPanel
from drivers.health import HealthState
from tests.waiting import wait_for


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def panel(factory):
    made = GpioPanel(
        help_button=17,
        light_ready=22,
        light_busy=23,
        light_fault=24,
        buzzer=18,
        paper_low_sensor=5,
        door_switch=27,
        pin_factory=factory,
    )
    factory.pin(27).drive_low()  # door shut
    factory.pin(5).drive_high()  # paper fine
    yield made
    made.close()


def test_help_button_calls_back(panel, factory):
    pressed = threading.Event()
    panel.on_help(pressed.set)
    factory.pin(17).drive_low()
    assert pressed.wait(1.0)


def test_one_status_light_at_a_time(panel, factory):
    panel.show("busy")
    assert (factory.pin(22).state, factory.pin(23).state, factory.pin(24).state) == (0, 1, 0)
    panel.show("fault")
    assert (factory.pin(22).state, factory.pin(23).state, factory.pin(24).state) == (0, 0, 1)


def test_open_door_is_tamper_and_paper_low_is_degraded(panel, factory):
    assert panel.health().state is HealthState.OK
    factory.pin(5).drive_low()
    assert panel.health().code == "paper_low"
    factory.pin(27).drive_high()
    assert panel.health().code == "door_open"
    assert panel.door_open and panel.paper_low


def test_buzzer_beeps_without_blocking(panel, factory):
    start = time.monotonic()
    panel.beep(0.05, times=1)
    assert time.monotonic() - start < 0.04
    pin = factory.pin(18)
    wait_for(lambda: len(pin.states) >= 3, what="the beep to start and end")
    pin.assert_states([False, True, False])


def test_no_global_pin_factory_is_set(panel):
    assert Device.pin_factory is None or not isinstance(Device.pin_factory, MockFactory)


def test_simulator_maps_keys():
    sim = SimulatedPanel()
    try:
        pressed = threading.Event()
        sim.on_help(pressed.set)
        assert sim.press_key("h") and pressed.wait(1.0)
        assert sim.health().state is HealthState.OK
        sim.press_key("d")
        assert sim.health().code == "door_open"
        sim.press_key("d")
        sim.press_key("p")
        assert sim.health().code == "paper_low"
        assert sim.press_key("x") is False
        sim.show("ready")
        assert sim.light_states() == {"ready": True, "busy": False, "fault": False}
    finally:
        sim.close()


def test_unconfigured_devices_are_left_out(factory):
    panel = GpioPanel(light_ready=22, pin_factory=factory)
    panel.show("fault")  # no fault light wired: nothing to do, no error
    panel.beep()
    assert panel.health().state is HealthState.OK
    panel.close()
