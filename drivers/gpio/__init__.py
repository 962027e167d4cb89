"""The GPIO panel: gpiozero devices mapped by config, and a keyboard-driven simulator."""

from drivers.gpio.panel import GpioPanel, Light
from drivers.gpio.sim import KEYS, SIM_PINS, SimulatedPanel

__all__ = ["KEYS", "SIM_PINS", "GpioPanel", "Light", "SimulatedPanel"]
