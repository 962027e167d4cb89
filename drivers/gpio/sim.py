"""The GPIO panel on gpiozero's mock pins, driven from the keyboard of a laptop."""

from __future__ import annotations

from typing import Any

from drivers._lazy import require
from drivers.gpio.panel import GpioPanel

# BCM pins of the reference wiring (docs/hardware.md); the simulator uses the same.
SIM_PINS = {
    "help_button": 17,
    "light_ready": 22,
    "light_busy": 23,
    "light_fault": 24,
    "buzzer": 18,
    "paper_low_sensor": 5,
    "door_switch": 27,
}
KEYS = {"h": "help (press and release)", "p": "paper-low sensor (toggle)", "d": "door (toggle)"}


class SimulatedPanel(GpioPanel):
    """A :class:`GpioPanel` on a private ``MockFactory``: keys stand in for hands.

    ``h`` presses and releases the help button, ``p`` toggles the paper-low sensor, ``d``
    opens or shuts the cabinet door. The door starts shut and the paper sensor quiet.
    """

    def __init__(self, factory: Any = None) -> None:
        mock = require("gpiozero.pins.mock", "install gpiozero")
        self.factory = factory or mock.MockFactory()
        super().__init__(pin_factory=self.factory, **SIM_PINS)
        self._pin("door_switch").drive_low()  # shut: the reed switch pulls to ground
        self._pin("paper_low_sensor").drive_high()

    def _pin(self, name: str) -> Any:
        return self.factory.pin(SIM_PINS[name])

    def press_key(self, key: str) -> bool:
        """Acts on ``key``; returns False for keys the panel does not map."""
        if key == "h":
            self._pin("help_button").drive_low()
            self._pin("help_button").drive_high()
        elif key == "p":
            pin = self._pin("paper_low_sensor")
            pin.drive_high() if pin.state == 0 else pin.drive_low()
        elif key == "d":
            pin = self._pin("door_switch")
            pin.drive_high() if pin.state == 0 else pin.drive_low()
        else:
            return False
        return True

    def light_states(self) -> dict[str, bool]:
        return {name: bool(led.value) for name, led in self.lights.items()}
