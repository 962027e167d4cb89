"""Staff PINs: which are allowed, and the scrypt hash they are stored as."""

from __future__ import annotations

import base64
import hashlib

import pytest

from edge.domain.errors import InvalidInput
from edge.security.pins import hash_pin, needs_rehash, validate_pin, verify_pin


def _encode(pin: str, *, n: int, r: int = 8, p: int = 1, salt: bytes = b"s" * 16) -> str:
    derived = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(derived).decode()}"


@pytest.mark.parametrize("pin", ["2580", "1357", "90210", "13572468", "1123", "1235", "0102"])
def test_reasonable_pins_pass(pin: str) -> None:
    validate_pin(pin)


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("", "length"),
        ("123", "length"),
        ("123456789", "length"),
        ("12a4", "length"),
        (" 2580", "length"),
        ("²580", "digits"),
        ("٢٥٨٠", "digits"),
        ("२५८०", "digits"),
        ("0000", "repeated"),
        ("99999999", "repeated"),
        ("1234", "run"),
        ("123456", "run"),
        ("12345678", "run"),
        ("4321", "run"),
        ("987654", "run"),
        ("7890", "run"),
        ("0987", "run"),
    ],
)
def test_weak_pins_are_refused_with_a_reason(pin: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_pin(pin)
    assert caught.value.code == "weak_pin"
    assert caught.value.details["reason"] == reason


def test_full_width_digits_are_the_same_pin() -> None:
    validate_pin("２５８０")
    assert verify_pin("２５８０", hash_pin("2580"))
    assert verify_pin("2580", hash_pin("２５８０"))
    assert not verify_pin("٢٥٨٠", hash_pin("2580"))  # another script's numerals match nothing


def test_hash_round_trip_and_format() -> None:
    encoded = hash_pin("2580")
    scheme, n, r, p, salt, derived = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt + "==")) == 16
    assert len(base64.b64decode(derived + "==")) == 32
    assert verify_pin("2580", encoded)
    assert not verify_pin("2581", encoded)
    assert not verify_pin("", encoded)
    assert not needs_rehash(encoded)


def test_same_pin_gets_a_fresh_salt() -> None:
    first, second = hash_pin("2580"), hash_pin("2580")
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]


def test_parameters_are_read_from_the_hash() -> None:
    old = _encode("2580", n=2**10)
    assert verify_pin("2580", old)
    assert not verify_pin("2581", old)
    assert needs_rehash(old)
    assert needs_rehash(_encode("2580", n=2**14, r=4))


def test_hash_of_stronger_parameters_needs_no_rehash() -> None:
    assert not needs_rehash(_encode("2580", n=2**14, p=2))


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "2580",
        "bcrypt$16384$8$1$c2FsdA$aGFzaA",
        "scrypt$16384$8$1$c2FsdA",
        "scrypt$16384$8$1$c2FsdA$aGFzaA$extra",
        "scrypt$16385$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43,
        "scrypt$1073741824$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43,
        "scrypt$16384$0$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43,
        "scrypt$16384$8$-1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43,
        "scrypt$16384$8$1$$" + "A" * 43,
        "scrypt$16384$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$not*base64",
        "scrypt$16384$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$QUFB",
        "scrypt$１６３８４$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43,
    ],
)
def test_malformed_hashes_never_verify_and_need_rehash(encoded: str) -> None:
    assert verify_pin("2580", encoded) is False
    assert needs_rehash(encoded) is True
