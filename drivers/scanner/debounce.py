"""Report a code held before the camera once, not thirty times a second."""

from __future__ import annotations

from collections.abc import Iterable

from drivers.scanner.code import Code


class Debouncer:
    """Passes a code the first time it is seen, then again only after it was gone.

    A code counts as gone when no frame showed it for ``release_s`` seconds: a customer who
    takes the phone away and shows it again is a second scan; a phone held for ten seconds,
    or a frame where the decoder missed it once, is not.
    """

    def __init__(self, release_s: float = 1.5) -> None:
        self.release_s = release_s
        self._last_seen: dict[Code, float] = {}

    def feed(self, codes: Iterable[Code], now: float) -> list[Code]:
        """The codes among ``codes`` (seen at monotonic time ``now``) that are new."""
        fresh = []
        for code in codes:
            last = self._last_seen.get(code)
            if last is None or now - last > self.release_s:
                fresh.append(code)
            self._last_seen[code] = now
        for code, last in list(self._last_seen.items()):
            if now - last > self.release_s:
                del self._last_seen[code]
        return fresh
