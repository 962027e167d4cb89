"""A virtual card dispenser on a fake serial line, with faults injected on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from drivers.dispenser.protocol import DISPENSE, RESET, STATUS, DispenserStatus, frame, unframe
from drivers.errors import ProtocolError


class VirtualDispenserLink:
    """Answers our protocol as a dispenser with ``cards`` in its hopper would.

    Faults: ``jam_next`` (the next dispense jams), ``garbage`` (the next n replies are line
    noise), ``silent`` (answers nothing, as an unpowered unit), :meth:`unplug`. The
    customer takes the card at the mouth with :meth:`take_card`.
    """

    def __init__(self, cards: int = 50, low_at: int = 5) -> None:
        self.timeout: float | None = 1.0
        self.cards = cards
        self.low_at = low_at
        self.card_at_mouth = False
        self.jammed = False
        self.jam_next = False
        self.garbage = 0
        self.silent = False
        self.unplugged = False
        self.dispensed = 0
        self._out = bytearray()
        self._lock = threading.Lock()

    def take_card(self) -> None:
        self.card_at_mouth = False

    def unplug(self) -> None:
        self.unplugged = True

    def _status(self) -> DispenserStatus:
        return DispenserStatus(
            self.card_at_mouth, 0 < self.cards <= self.low_at, self.cards == 0, self.jammed
        )

    def _answer(self, command: str) -> str:
        if command == STATUS:
            return self._status().encode()
        if command == RESET:
            self.jammed = False
            return "OK"
        if command == DISPENSE:
            if self.jammed:
                return "E2"
            if self.card_at_mouth:
                return "E3"
            if self.cards == 0:
                return "E1"
            if self.jam_next:
                self.jam_next, self.jammed = False, True
                return "E2"
            self.cards -= 1
            self.dispensed += 1
            self.card_at_mouth = True
            return "OK"
        return "E9"

    def write(self, data: bytes, /) -> int:
        if self.unplugged:
            raise OSError("write failed: device disconnected")
        try:
            command = unframe(data)
        except ProtocolError:
            return len(data)  # a real unit ignores frames it cannot parse
        with self._lock:
            if self.silent:
                return len(data)
            if self.garbage:
                self.garbage -= 1
                self._out += b"\x02\xff\x13S1\x03\x00"
            else:
                self._out += frame(self._answer(command))
        return len(data)

    def read(self, size: int = 1, /) -> bytes:
        return self._take(lambda buf: min(size, len(buf)) if len(buf) >= size else -1)

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        def ready(buf: bytearray) -> int:
            at = buf.find(expected)
            if at >= 0:
                return at + len(expected)
            return size if size is not None and len(buf) >= size else -1

        return self._take(ready)

    def _take(self, ready: Callable[[bytearray], int]) -> bytes:
        deadline = time.monotonic() + (self.timeout or 0.0)
        while True:
            if self.unplugged:
                raise OSError("read failed: device disconnected")
            with self._lock:
                n = ready(self._out)
                if n >= 0 or time.monotonic() >= deadline:
                    n = len(self._out) if n < 0 else n
                    chunk = bytes(self._out[:n])
                    del self._out[:n]
                    return chunk
            time.sleep(0.005)

    def reset_input_buffer(self) -> None:
        with self._lock:
            self._out.clear()

    def close(self) -> None:
        pass
