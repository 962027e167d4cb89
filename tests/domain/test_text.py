"""Outside text shown to people is escaped; typed digits follow one rule."""

from __future__ import annotations

import logging
import sys
import unicodedata
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.domain.cards import parse_card_number
from edge.domain.errors import InvalidInput
from edge.domain.members import parse_birthday
from edge.domain.text import EscapingFormatter, escape_controls, fold_digits, typed_digit

CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("X\x1b]0;pwned\x07\nsecond line", "X\\x1b]0;pwned\\x07\\nsecond line"),
        ("A\nB", "A\\nB"),
        ("tab\there\r", "tab\\there\\r"),
        ("del\x7f", "del\\x7f"),
        ("c1 \x9b31m \x85", "c1 \\x9b31m \\x85"),
        ("abc\u202edcba", "abc\\u202edcba"),
        (
            "zero\u200bwidth\u2028line\u2029para\ufeff",
            "zero\\u200bwidth\\u2028line\\u2029para\\ufeff",
        ),
        ("byte \udcff", "byte \\udcff"),
        ("王女士 ¥5 ０-９\u3000…", "王女士 ¥5 ０-９\u3000…"),  # printable and wide spaces stay
        ("already '\\x1b' escaped", "already '\\x1b' escaped"),  # not escaped twice
    ],
)
def test_control_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


@given(st.text())
def test_escaped_text_is_one_line_with_nothing_a_terminal_acts_on(text: str) -> None:
    shown = escape_controls(text)
    assert not any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in shown)
    assert len(shown.splitlines()) <= 1


@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))))
def test_text_without_controls_is_unchanged(text: str) -> None:
    assert escape_controls(text) == text


def test_log_records_are_one_line_with_escapes_and_tracebacks_keep_their_lines() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "scanner: %s", ("a\x1b[2J\nb",), None
    )
    assert formatter.format(record) == "WARNING scanner: a\\x1b[2J\\nb"
    try:
        raise ValueError("bad\x1b]0;x\x07")
    except ValueError:
        failed = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(failed)
    assert "\x1b" not in text and "\x07" not in text and "bad\\x1b]0;x\\x07" in text
    assert text.count("\n") >= 2  # "failed", "Traceback ...", the frames, the error


@pytest.mark.parametrize(
    ("typed", "folded"),
    [("100", "100"), ("１００", "100"), ("１3８-００", "138-00"), ("", ""), ("abc", "abc")],
)
def test_ascii_and_full_width_digits_are_the_digits(typed: str, folded: str) -> None:
    assert fold_digits(typed) == folded


@pytest.mark.parametrize("typed", ["١٠٠", "۱۰۰", "१००", "1²", "①", "三", "𝟏00", "10½"])
def test_other_numerals_are_refused_without_echoing_them(typed: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        fold_digits(typed, "an amount", code="bad_amount", field="x")
    assert caught.value.code == "bad_amount" and caught.value.details == {"field": "x"}
    assert (
        caught.value.message
        == "an amount takes the digits 0-9 or full-width ０-９, no other numerals"
    )
    assert typed not in caught.value.message


def test_a_keypad_key_is_a_digit_by_the_same_rule() -> None:
    assert [typed_digit(k) for k in ("7", "７", "٧", "७", "⁷", "ok", "back", "77", "")] == [
        "7",
        "7",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_card_numbers_and_birthdays_follow_the_digits_rule() -> None:
    assert parse_card_number("２９０００００００００１８") == "2900000000018"
    assert parse_card_number("２９００ ０００ ０００ ０１８") == "2900000000018"
    with pytest.raises(InvalidInput) as caught:
        parse_card_number("٢٩٠٠٠٠٠٠٠٠٠١٨")
    assert caught.value.code == "bad_card_number" and "0-9" in caught.value.message
    today = date(2026, 3, 2)
    assert parse_birthday("１９５０-０３-０９", today) == date(1950, 3, 9)
    with pytest.raises(InvalidInput) as caught:
        parse_birthday("١٩٥٠-٠٣-٠٩", today)
    assert caught.value.code == "bad_birthday"
