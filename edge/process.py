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


def freeze_startup_objects() -> None:
    """Leaves what the process built to start (modules, schemas, the ORM's mappings, the
    touchscreen's kv rules, fonts and first screen) out of every later cycle collection:
    collects once, then moves what is alive into the collector's permanent generation. A
    collection then looks only at what was made since."""
    gc.collect()
    gc.freeze()


def settle_heap() -> None:
    """Called once a service is built, before it runs: its start-up objects frozen
    (:func:`freeze_startup_objects`), and the sweeps less often. A batch of 500 events makes
    tens of thousands of short-lived objects; with the defaults each batch set off several
    sweeps of the whole heap, which took a third of HQ's time for a device's backlog."""
    freeze_startup_objects()
    gc.set_threshold(*COLLECT_AFTER)
