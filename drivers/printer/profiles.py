"""Printer profiles: paper width, and how the printer wants Chinese text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["gb18030", "gbk", "big5", "raster"]

# Characters a legacy code page lacks but has a full-width twin of (GBK has no U+00A5).
_SUBSTITUTES: dict[str, dict[str, str]] = {
    "gbk": {"¥": "￥", "€": "EUR"},
    "gb18030": {},
}


@dataclass(frozen=True)
class PrinterProfile:
    """What a printer model needs to print our receipts correctly.

    Attributes:
        paper_mm: 58 or 80 mm roll.
        encoding: the code page of the printer's Chinese font. ``raster`` prints every
            non-ASCII line as an image, for printers with no Chinese font at all.
        kanji_mode: send ``FS &`` (enter double-byte mode) after initialising; most
            mainland printers need it, some start in it and ignore it.
    """

    name: str = "generic-80"
    paper_mm: int = 80
    encoding: Encoding = "gb18030"
    kanji_mode: bool = True

    @property
    def dots(self) -> int:
        """Printable width in dots at 203 dpi (48 mm and 72 mm)."""
        return 384 if self.paper_mm == 58 else 576

    @property
    def columns(self) -> int:
        """Characters per line in font A (12 dots wide); a Hanzi takes two."""
        return self.dots // 12

    def encode(self, text: str) -> bytes:
        """``text`` in the printer's code page; unknown characters become ``?``.

        The whole line is encoded, not just lines holding a Hanzi: full-width punctuation
        (，：) and the yen sign alone are double-byte too. Big5 goes through cp950, the Big5
        that Taiwanese printers implement, which has both yen signs.
        """
        codec = {"raster": "gb18030", "big5": "cp950"}.get(self.encoding, self.encoding)
        for char, twin in _SUBSTITUTES.get(codec, {}).items():
            text = text.replace(char, twin)
        return text.encode(codec, errors="replace")


PROFILES = {
    "generic-58": PrinterProfile("generic-58", 58, "gb18030", True),
    "generic-80": PrinterProfile("generic-80", 80, "gb18030", True),
    "gbk-80": PrinterProfile("gbk-80", 80, "gbk", True),
    "big5-80": PrinterProfile("big5-80", 80, "big5", True),
    "raster-80": PrinterProfile("raster-80", 80, "raster", False),
    "raster-58": PrinterProfile("raster-58", 58, "raster", False),
}
