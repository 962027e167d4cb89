"""A receipt as a list of printing steps, independent of any printer or preview."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

Align = Literal["left", "center", "right"]


@dataclass(frozen=True)
class Text:
    """One line of text; ``big`` doubles width and height."""

    text: str
    align: Align = "left"
    bold: bool = False
    big: bool = False


@dataclass(frozen=True)
class Rule:
    """A full-width separator line."""

    char: str = "-"


@dataclass(frozen=True)
class Qr:
    """A QR code printed by the printer itself (model 2, error correction M)."""

    data: str
    module_dots: int = 6


@dataclass(frozen=True)
class Barcode:
    """A 1-D code with its human-readable text below it."""

    data: str
    kind: Literal["CODE128", "EAN13"] = "CODE128"


@dataclass(frozen=True)
class Feed:
    lines: int = 1


@dataclass(frozen=True)
class Cut:
    """Feed past the cutter and cut."""


Step = Text | Rule | Qr | Barcode | Feed | Cut


@dataclass(frozen=True)
class Receipt:
    """What to print, in order; ``title`` names it in logs and preview files."""

    title: str
    steps: tuple[Step, ...]


def display_width(text: str) -> int:
    """Columns ``text`` takes on a receipt: wide (Hanzi, full-width) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def columns(left: str, right: str, width: int) -> str:
    """``left`` and ``right`` on one line, the right one flush to the margin."""
    gap = max(1, width - display_width(left) - display_width(right))
    return f"{left}{' ' * gap}{right}"
