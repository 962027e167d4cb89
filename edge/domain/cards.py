"""Card numbers and card states.

A card number is 13 digits that double as an EAN-13 barcode in the in-store range: the prefix
``29`` (restricted circulation, never a product), a 10-digit serial from a range owned by the
issuing device (so offline issuance never collides), and the EAN-13 check digit, which catches
every single-digit typo and most transpositions at the keypad and the lane.
"""

from __future__ import annotations

from enum import StrEnum

from edge.domain.errors import InvalidInput, Refusal
from edge.domain.text import fold_digits

CARD_PREFIX = "29"
CARD_LENGTH = 13


class CardState(StrEnum):
    ACTIVE = "active"
    LOST = "lost"
    BLOCKED = "blocked"
    REPLACED = "replaced"


def ean13_check_digit(body: str) -> str:
    """The EAN-13 check digit of 12 digits (weights 1, 3, 1, 3, ... from the left)."""
    if len(body) != 12 or not body.isdigit():
        raise ValueError("an EAN-13 body is 12 digits")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return str((10 - total % 10) % 10)


def card_number(serial: int) -> str:
    """The card number for a serial of this chain's range."""
    if not 0 <= serial < 10**10:
        raise ValueError("card serial out of range")
    body = f"{CARD_PREFIX}{serial:010d}"
    return body + ean13_check_digit(body)


def parse_card_number(text: str) -> str:
    """Validates typed or scanned card text; returns the canonical 13 digits.

    Digits follow the one rule for typed numbers (:func:`edge.domain.text.fold_digits`):
    full-width ones count as 0-9, other numerals are refused.
    """
    digits = "".join(fold_digits(text, "a card number", code="bad_card_number").split())
    if (
        len(digits) != CARD_LENGTH
        or not (digits.isascii() and digits.isdigit())
        or not digits.startswith(CARD_PREFIX)
    ):
        raise InvalidInput(f"'{text}' is not a member card number", code="bad_card_number")
    if ean13_check_digit(digits[:12]) != digits[12]:
        raise InvalidInput(
            f"card number {digits} has a wrong check digit (typo?)", code="bad_card_number"
        )
    return digits


def card_serial(card_no: str) -> int:
    return int(card_no[2:12])


def require_usable(card_no: str, state: str) -> None:
    """Refuses a card that is not active, saying why in the member's terms."""
    if state == CardState.ACTIVE:
        return
    reasons = {
        CardState.LOST: ("card_lost", "this card was reported lost; please see the staff desk"),
        CardState.BLOCKED: ("card_blocked", "this card is blocked; please see the staff desk"),
        CardState.REPLACED: (
            "card_replaced",
            "this card was replaced by a new one; please use the new card",
        ),
    }
    code, message = reasons.get(CardState(state), ("card_unusable", "this card cannot be used"))
    raise Refusal(message, code=code, card_no=card_no, state=state)


def can_report_lost(state: str) -> bool:
    return state == CardState.ACTIVE


def can_replace(state: str) -> bool:
    """A card may be replaced while active (damaged), lost or blocked, but only once."""
    return state in (CardState.ACTIVE, CardState.LOST, CardState.BLOCKED)
