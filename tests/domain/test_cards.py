from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.domain.cards import (
    CardState,
    can_replace,
    card_number,
    card_serial,
    ean13_check_digit,
    parse_card_number,
    require_usable,
)
from edge.domain.errors import InvalidInput, Refusal


def test_check_digit_matches_a_known_ean13():
    # 400638133393 -> 1 (a published EAN-13 example: 4006381333931)
    assert ean13_check_digit("400638133393") == "1"


def test_card_number_layout():
    assert card_number(1) == "2900000000018"
    assert card_serial("2900000000018") == 1


@given(st.integers(0, 10**10 - 1))
def test_every_card_number_parses_back(serial):
    number = card_number(serial)
    assert parse_card_number(number) == number
    assert card_serial(number) == serial


@given(st.integers(0, 10**10 - 1), st.integers(0, 12), st.integers(1, 9))
def test_any_single_digit_typo_is_caught(serial, position, delta):
    number = card_number(serial)
    digits = list(number)
    if position < 2:  # the prefix is checked separately
        position += 2
    digits[position] = str((int(digits[position]) + delta) % 10)
    with pytest.raises(InvalidInput):
        parse_card_number("".join(digits))


@pytest.mark.parametrize("text", ["", "abc", "290000000001", "1234567890128", "29000000000189"])
def test_malformed_card_text_is_refused(text):
    with pytest.raises(InvalidInput) as err:
        parse_card_number(text)
    assert err.value.code == "bad_card_number"


def test_spaces_typed_on_the_keypad_are_ignored():
    assert parse_card_number(" 2900 0000 00018 ") == "2900000000018"


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (CardState.LOST, "card_lost"),
        (CardState.BLOCKED, "card_blocked"),
        (CardState.REPLACED, "card_replaced"),
    ],
)
def test_unusable_cards_are_refused_with_their_reason(state, code):
    with pytest.raises(Refusal) as err:
        require_usable("2900000000018", state)
    assert err.value.code == code
    require_usable("2900000000018", CardState.ACTIVE)


def test_a_replaced_card_cannot_be_replaced_again():
    assert can_replace(CardState.LOST)
    assert not can_replace(CardState.REPLACED)
