"""A card dispenser on a serial line speaking our framed protocol."""

from __future__ import annotations

import threading

from drivers.dispenser.interface import CardDispenser, DispenseError
from drivers.dispenser.protocol import (
    DISPENSE,
    ERRORS,
    ETX,
    RESET,
    STATUS,
    DispenserStatus,
    frame,
    unframe,
)
from drivers.errors import DeviceTimeoutError, DeviceUnavailableError, ProtocolError
from drivers.health import Health
from drivers.serialio import SerialLink


class SerialDispenser(CardDispenser):
    """Talks to the dispenser one command at a time, each bounded by ``timeout_s``.

    Wiring: RS-232 through a USB adapter, opened as ``/dev/kiosk-dispenser`` (our udev rule)
    at 9600 8N1. A reply that is garbled (bad frame or checksum) is retried once after
    flushing the input; a second garbled reply or silence fails the command.

    Example:
        >>> dispenser = SerialDispenser(open_serial("/dev/kiosk-dispenser", 9600, 3.0), 3.0)
        >>> dispenser.dispense()  # doctest: +SKIP
    """

    def __init__(self, link: SerialLink, timeout_s: float = 3.0) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def dispense(self) -> None:
        reply = self._transact(DISPENSE)
        if reply in ERRORS:
            code = ERRORS[reply]
            status = self.status().health()
            raise DispenseError(
                status if status.code == code else Health.failed(code, f"dispenser: {code}")
            )
        if reply != "OK":
            raise ProtocolError(Health.degraded("garbage", f"dispense answered {reply!r}"))

    def status(self) -> DispenserStatus:
        return DispenserStatus.parse(self._transact(STATUS))

    def reset(self) -> None:
        self._transact(RESET)

    def _transact(self, command: str) -> str:
        with self._lock:
            try:
                return self._exchange(command)
            except ProtocolError:
                return self._exchange(command)

    def _exchange(self, command: str) -> str:
        self._link.timeout = self._timeout_s
        try:
            self._link.reset_input_buffer()
            self._link.write(frame(command))
            head = self._link.read_until(bytes([ETX]), 256)
            tail = self._link.read(1) if head.endswith(bytes([ETX])) else b""
        except OSError as exc:
            raise DeviceUnavailableError(
                Health.failed("disconnected", f"dispenser: {exc}")
            ) from exc
        if not head:
            raise DeviceTimeoutError(
                Health.failed(
                    "no_answer", f"dispenser did not answer {command} in {self._timeout_s:g} s"
                )
            )
        return unframe(head + tail)

    def close(self) -> None:
        self._link.close()
