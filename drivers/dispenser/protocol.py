"""The card dispenser's serial protocol: framing, commands and replies (see docs/hardware.md).

Frame: ``STX payload ETX BCC``; payload is ASCII; BCC is the XOR of payload and ETX.
Host commands: ``DC`` dispense one card to the mouth, ``ST`` status, ``RS`` reset after a
jam is cleared. Replies: ``OK``; ``E1`` empty, ``E2`` jam, ``E3`` a card already waits at
the mouth; ``S`` + four ``0``/``1`` flags (card at mouth, low, empty, jam).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import ProtocolError
from drivers.health import Health

STX, ETX = 0x02, 0x03
DISPENSE, STATUS, RESET = "DC", "ST", "RS"
ERRORS = {"E1": "empty", "E2": "jam", "E3": "card_waiting"}


def bcc(payload: bytes) -> int:
    value = ETX
    for byte in payload:
        value ^= byte
    return value


def frame(payload: str) -> bytes:
    data = payload.encode("ascii")
    return bytes([STX]) + data + bytes([ETX, bcc(data)])


def unframe(raw: bytes) -> str:
    """The payload of one reply frame; raises :class:`ProtocolError` on anything else."""
    start = raw.find(bytes([STX]))
    end = raw.find(bytes([ETX]), start + 1)
    if start < 0 or end < 0 or end + 1 >= len(raw):
        raise ProtocolError(Health.degraded("garbage", f"dispenser sent no frame: {raw!r}"))
    payload = raw[start + 1 : end]
    if raw[end + 1] != bcc(payload):
        raise ProtocolError(Health.degraded("garbage", f"dispenser frame checksum bad: {raw!r}"))
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(Health.degraded("garbage", f"dispenser sent {raw!r}")) from exc


@dataclass(frozen=True)
class DispenserStatus:
    card_at_mouth: bool
    low: bool
    empty: bool
    jam: bool

    @classmethod
    def parse(cls, payload: str) -> DispenserStatus:
        if len(payload) != 5 or payload[0] != "S" or set(payload[1:]) - {"0", "1"}:
            raise ProtocolError(Health.degraded("garbage", f"bad status reply {payload!r}"))
        return cls(*(flag == "1" for flag in payload[1:]))

    def encode(self) -> str:
        flags = (self.card_at_mouth, self.low, self.empty, self.jam)
        return "S" + "".join("1" if f else "0" for f in flags)

    def health(self) -> Health:
        if self.jam:
            return Health.failed("jam", "card jammed in the dispenser; open it and clear the path")
        if self.empty:
            return Health.failed("empty", "card dispenser is empty")
        if self.low:
            return Health.degraded("low", "card dispenser is running low")
        return Health.ok()
