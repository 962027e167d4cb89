"""Member rules: registration needs consent and a phone; a name is a surname and a title."""

from __future__ import annotations

from datetime import date

from edge.domain.errors import InvalidInput, Refusal
from edge.domain.text import fold_digits

TITLES = ("先生", "女士")


def require_consent(consented: bool) -> None:
    if not consented:
        raise Refusal(
            "registration needs the member's explicit consent to the privacy terms",
            code="consent_required",
        )


def validate_name(name: str | None) -> str | None:
    """A short display name, e.g. a surname with 先生/女士; control characters refused."""
    if name is None:
        return None
    name = name.strip()
    if not name:
        return None
    if len(name) > 16 or any(not ch.isprintable() for ch in name):
        raise InvalidInput("a name has at most 16 printable characters", code="bad_name")
    return name


def parse_birthday(text: str | None, today: date) -> date | None:
    if text is None or not text.strip():
        return None
    typed = fold_digits(text.strip(), "a birthday", code="bad_birthday")
    try:
        day = date.fromisoformat(typed)
    except ValueError:
        raise InvalidInput(f"'{text}' is not a date (YYYY-MM-DD)", code="bad_birthday") from None
    if day > today or day.year < today.year - 120:
        raise InvalidInput(f"birthday {day} is not plausible", code="bad_birthday")
    return day


def is_birthday_month(birthday: date | None, today: date) -> bool:
    return birthday is not None and birthday.month == today.month
