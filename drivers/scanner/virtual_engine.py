"""A virtual scan engine on the serial interface, for tests and the laptop simulator."""

from __future__ import annotations

import threading
import time


class VirtualScanEngineLink:
    """Behaves as the serial port of a scan engine: lines come out when codes are shown.

    Faults are injected on purpose: :meth:`send_garbage` (line noise, a wrong baud rate),
    :meth:`unplug` (every read raises ``OSError`` like pyserial on a vanished device).
    Reads honour ``timeout`` as pyserial does.
    """

    def __init__(self) -> None:
        self.timeout: float | None = 1.0
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._unplugged = False
        self.closed = False

    def present(self, text: str, terminator: bytes = b"\r\n") -> None:
        self._feed(text.encode("utf-8") + terminator)

    def send_garbage(self, data: bytes) -> None:
        self._feed(data)

    def unplug(self) -> None:
        with self._cond:
            self._unplugged = True
            self._cond.notify_all()

    def _feed(self, data: bytes) -> None:
        with self._cond:
            self._buffer += data
            self._cond.notify_all()

    def write(self, data: bytes, /) -> int:
        return len(data)  # scan engines ignore host bytes in this mode

    def read(self, size: int = 1, /) -> bytes:
        return self.read_until(b"", size)

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if self.timeout is not None else 1e9)
        with self._cond:
            while True:
                if self._unplugged:
                    raise OSError("device reports readiness to read but returned no data")
                end = self._buffer.find(expected) + len(expected) if expected else -1
                if expected and end >= len(expected):
                    chunk = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    return chunk
                if size is not None and len(self._buffer) >= size:
                    chunk = bytes(self._buffer[:size])
                    del self._buffer[:size]
                    return chunk
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    chunk = bytes(self._buffer)
                    self._buffer.clear()
                    return chunk
                self._cond.wait(remaining)

    def reset_input_buffer(self) -> None:
        with self._cond:
            self._buffer.clear()

    def close(self) -> None:
        self.closed = True
