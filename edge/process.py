"""What a service process (``kiosk agent``, ``kiosk hq serve``) sets up before it runs."""

from __future__ import annotations

import gc
import logging

from edge.domain.text import LOG_FORMAT, EscapingFormatter

# The collector looks at the young objects after this many allocations (Python's default is
# 700), at the middle generation after this many young sweeps, and at the whole heap after
# this many middle ones.
COLLECT_AFTER = (20_000, 20, 20)


def log_to_stderr(level: str) -> None:
    """The process's log on stderr (the journal, under systemd), outside text escaped."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def settle_heap() -> None:
    """Called once a service is built, before it runs: what start-up made (modules, schemas,
    the ORM's mappings) is left out of the garbage collector's sweeps from now on, and the
    sweeps come less often. A batch of 500 events makes tens of thousands of short-lived
    objects; with the defaults each batch set off several sweeps of the whole heap, which
    took a third of HQ's time for a device's backlog."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECT_AFTER)
