"""Printer status from ESC/POS real-time status bytes (``DLE EOT n``), and its health."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.health import Health

Paper = Literal["ok", "low", "out", "unknown"]

QUERY_PRINTER = b"\x10\x04\x01"
QUERY_OFFLINE_CAUSE = b"\x10\x04\x02"
QUERY_PAPER = b"\x10\x04\x04"


@dataclass(frozen=True)
class PrinterStatus:
    """What the printer said about itself; ``None`` where it cannot tell (file, no reply)."""

    online: bool | None
    paper: Paper
    cover_open: bool | None

    def health(self) -> Health:
        if self.online is False and self.cover_open:
            return Health.failed("cover_open", "printer cover is open")
        if self.paper == "out":
            return Health.failed("paper_out", "printer is out of paper")
        if self.online is False:
            return Health.failed("offline", "printer is offline")
        if self.paper == "low":
            return Health.degraded("paper_low", "printer paper is running low")
        if self.online is None:
            return Health.degraded("no_status", "printer does not report its status")
        return Health.ok()


UNKNOWN = PrinterStatus(None, "unknown", None)


def parse_printer(byte: int) -> bool:
    """``DLE EOT 1``: bit 3 set means offline. Returns whether online."""
    return not byte & 0x08


def parse_offline_cause(byte: int) -> bool:
    """``DLE EOT 2``: bit 2 set means the cover is open."""
    return bool(byte & 0x04)


def parse_paper(byte: int) -> Paper:
    """``DLE EOT 4``: bits 5-6 paper end, bits 2-3 near end."""
    if byte & 0x60:
        return "out"
    if byte & 0x0C:
        return "low"
    return "ok"
