"""The GPIO panel: help button, status lights, buzzer, paper-low sensor, cabinet door switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from drivers._lazy import require
from drivers.errors import DeviceUnavailableError
from drivers.health import Health

Light = Literal["ready", "busy", "fault"]


class GpioPanel:
    """The panel's devices on gpiozero, each on the pin the config names (BCM numbers).

    Wiring (all inputs switch to ground, internal pull-ups on):
    help button between its pin and GND; door reed switch closed while the door is shut;
    paper-low sensor output pulled low when the roll is near its end; lights and the buzzer
    through a transistor or driver, active high. An unconfigured pin (``None``) leaves that
    device out.

    ``pin_factory`` is passed to every device (a ``MockFactory`` in tests and the
    simulator, ``LGPIOFactory`` on a Pi 5); the global ``Device.pin_factory`` is never set.

    Example:
        >>> panel = GpioPanel(help_button=17, light_ready=22, door_switch=27)  # doctest: +SKIP
        >>> panel.on_help(call_staff)  # doctest: +SKIP
        >>> panel.show("ready")  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        help_button: int | None = None,
        light_ready: int | None = None,
        light_busy: int | None = None,
        light_fault: int | None = None,
        buzzer: int | None = None,
        paper_low_sensor: int | None = None,
        door_switch: int | None = None,
        pin_factory: Any = None,
    ) -> None:
        gz = require("gpiozero", "install gpiozero (and python3-lgpio on a Pi 5)")
        kw = {"pin_factory": pin_factory}
        try:
            self.help = gz.Button(help_button, bounce_time=0.05, **kw) if help_button else None
            self.lights = {
                name: gz.LED(pin, **kw)
                for name, pin in (
                    ("ready", light_ready),
                    ("busy", light_busy),
                    ("fault", light_fault),
                )
                if pin is not None
            }
            self.buzzer = gz.Buzzer(buzzer, **kw) if buzzer is not None else None
            self.paper_sensor = (
                gz.DigitalInputDevice(paper_low_sensor, pull_up=True, **kw)
                if paper_low_sensor is not None
                else None
            )
            # an input device, not a Button: a Button's hold thread costs a second to close
            self.door = (
                gz.DigitalInputDevice(door_switch, pull_up=True, **kw)
                if door_switch is not None
                else None
            )
        except Exception as exc:  # gpiozero raises BadPinFactory, PinInUse, GPIOPinInUse...
            raise DeviceUnavailableError(Health.failed("gpio_error", f"GPIO: {exc}")) from exc

    def on_help(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` (on gpiozero's thread) each time the help button is pressed."""
        if self.help is not None:
            # gpiozero passes the device to one-argument callables; ours take none
            self.help.when_pressed = lambda: callback()  # noqa: PLW0108

    def show(self, light: Light) -> None:
        """Lights one status light and puts out the others."""
        for name, led in self.lights.items():
            led.value = name == light

    def beep(self, seconds: float = 0.15, times: int = 1) -> None:
        """Beeps in the background; never blocks the caller."""
        if self.buzzer is not None:
            self.buzzer.beep(on_time=seconds, off_time=seconds, n=times, background=True)

    @property
    def paper_low(self) -> bool:
        return bool(self.paper_sensor is not None and self.paper_sensor.value)

    @property
    def door_open(self) -> bool:
        return bool(self.door is not None and not self.door.value)

    def health(self) -> Health:
        if self.door_open:
            return Health.degraded("door_open", "cabinet door is open (tamper)")
        if self.paper_low:
            return Health.degraded("paper_low", "paper-low sensor is active")
        return Health.ok()

    def close(self) -> None:
        for device in (self.help, self.buzzer, self.paper_sensor, self.door, *self.lights.values()):
            if device is not None:
                device.close()
