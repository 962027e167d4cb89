"""Card dispensers: the serial protocol, a pyserial backend and a virtual unit."""

from drivers.dispenser.interface import CardDispenser, DispenseError
from drivers.dispenser.protocol import DispenserStatus, frame, unframe
from drivers.dispenser.serial_dispenser import SerialDispenser
from drivers.dispenser.virtual import VirtualDispenserLink

__all__ = [
    "CardDispenser",
    "DispenseError",
    "DispenserStatus",
    "SerialDispenser",
    "VirtualDispenserLink",
    "frame",
    "unframe",
]
