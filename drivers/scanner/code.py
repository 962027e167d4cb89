"""What a scanner reports: a symbology and the code's text, as a frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Symbology(StrEnum):
    """The symbologies the member center uses; every other kind is ignored on purpose.

    Decoding fewer kinds is faster and avoids false reads such as a CODE39 "T" found in
    the texture of a shopping bag.
    """

    QR_CODE = "QR_CODE"
    CODE_128 = "CODE_128"
    EAN_13 = "EAN_13"


MEMBER_CENTER_SYMBOLOGIES = frozenset(Symbology)


@dataclass(frozen=True)
class Code:
    """One decoded code; ``text`` is exactly what the symbol holds, decoded as text."""

    format: Symbology
    text: str
