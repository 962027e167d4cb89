"""A progress bar for long work on a terminal: done of total, rate, and time left.

On a terminal the bar is redrawn in place at most ten times a second; written to a file or a
pipe, it prints a plain line every few seconds instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """``with Progress("storing", total, "events") as bar: ... bar.advance(n)``."""

    WIDTH = 28

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "",
        stream: TextIO | None = None,
    ) -> None:
        self.what = what
        self.total = max(0, total)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._shown = 0.0
        self._every = 0.1 if self._tty else 5.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def line(self) -> str:
        """The progress as one line: what, bar, done of total, rate, time left."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.WIDTH * min(fraction, 1.0))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        left_text = _duration(left) if left != float("inf") else "--:--"
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"{self.what} [{bar}] {self.done:,}/{self.total:,}{unit} "
            f"{rate:,.0f}{unit}/s, {left_text} left"
        )

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._shown >= self._every:
            self._shown = now
            self._show()

    def _show(self) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Shows the final state and ends the line."""
        self._show()
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
