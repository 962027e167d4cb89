"""Waiting for a condition instead of for a fixed time.

A test that sleeps a fixed time before asserting passes on an idle machine and fails on a busy
one (the CI machine runs two test processes at once). ``wait_for`` polls the condition until
it holds, however soon that is, and gives up only after a generous deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Long enough for a machine running other tests beside this one; a condition that holds
# returns at once, so only a failing test ever waits this long.
DEADLINE_S = 30.0


def wait_for(
    condition: Callable[[], T],
    timeout: float = DEADLINE_S,
    what: str = "",
    *,
    every: float = 0.05,
    step: Callable[[float], object] = time.sleep,
) -> T:
    """Calls ``condition`` until it returns something true, and returns that.

    Between two calls ``step(every)`` runs: ``time.sleep`` by default, or something that
    drives an event loop meanwhile (the UI tests pump Kivy's). Raises ``AssertionError``
    naming ``what`` when the condition still does not hold after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        step(every)
