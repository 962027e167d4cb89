"""Globally unique, time-ordered ids made on the device (ULID layout, Crockford base32)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def id_timestamp(ident: str) -> datetime:
    """The UTC creation time encoded in an id (millisecond precision)."""
    value = 0
    for ch in ident[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return datetime.fromtimestamp(value / 1000, tz=UTC)


class IdFactory:
    """Makes 26-character ids that sort by creation time, monotonic within one process.

    Two ids made in the same millisecond differ by an incremented random part, so ordering by id
    is ordering by creation on this device; across devices the 80 random bits keep them unique.
    """

    def __init__(
        self,
        clock_ms: Callable[[], int] | None = None,
        random_bits: Callable[[], int] | None = None,
    ) -> None:
        self._clock_ms = clock_ms or (lambda: int(datetime.now(UTC).timestamp() * 1000))
        self._random = random_bits or (lambda: int.from_bytes(os.urandom(10), "big"))
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = self._clock_ms()
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = (self._last_rand + 1) % (1 << _RANDOM_BITS)
            else:
                rand = self._random()
            self._last_ms, self._last_rand = ms, rand
        return _encode(ms, 10) + _encode(rand, 16)
