"""Staff PINs: which ones are allowed, and how they are stored (scrypt, parameters in the hash)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os

from edge.domain.errors import InvalidInput
from edge.domain.text import fold_digits

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32

_MIN_PIN, _MAX_PIN = 4, 8
# Bounds on what verify_pin will compute for a stored hash, so a corrupt row cannot make it
# allocate gigabytes or spin for minutes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16


def validate_pin(pin: str) -> None:
    """Refuse PINs too short, too long, or guessed first (0000, 1234, 4321, 7890).

    A 4-digit PIN has only 10,000 values; the lockout in the staff service only helps if the
    first few guesses an attacker tries are not allowed in the first place. Full-width digits
    count as 0-9 (the one rule for typed digits, :func:`edge.domain.text.fold_digits`), here
    and when the PIN is hashed or checked.

    Raises:
        InvalidInput: ``weak_pin`` with the reason (``digits`` for another script's numerals).
    """
    pin = fold_digits(pin, "a PIN", code="weak_pin", reason="digits")
    if not (pin.isascii() and pin.isdigit() and _MIN_PIN <= len(pin) <= _MAX_PIN):
        raise InvalidInput(
            f"A PIN is {_MIN_PIN} to {_MAX_PIN} digits.", code="weak_pin", reason="length"
        )
    if len(set(pin)) == 1:
        raise InvalidInput(
            "A PIN must not repeat a single digit.", code="weak_pin", reason="repeated"
        )
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    if steps in ({1}, {9}):
        raise InvalidInput(
            "A PIN must not be a run of consecutive digits.", code="weak_pin", reason="run"
        )


def hash_pin(pin: str) -> str:
    """Hash a PIN with scrypt for storage: ``scrypt$16384$8$1$<salt b64>$<hash b64>``.

    scrypt is memory-hard, so a stolen staff table cannot be brute-forced cheaply on a GPU even
    though PINs are short; the parameters travel in the string so they can be raised later
    (see :func:`needs_rehash`) without invalidating existing hashes.
    """
    salt = os.urandom(SALT_BYTES)
    derived = _scrypt(fold_digits(pin), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, dklen=KEY_BYTES)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(derived))
    )


def verify_pin(pin: str, encoded: str) -> bool:
    """Whether ``pin`` matches ``encoded``; compared in constant time.

    A malformed or unreadable ``encoded`` is a plain mismatch (False), never an exception, so a
    damaged row locks its staff member out instead of crashing the sign-in screen. A PIN typed
    in full-width digits is the same PIN; one with another script's numerals matches none.
    """
    parsed = _parse(encoded)
    if parsed is None:
        return False
    try:
        pin = fold_digits(pin)
    except InvalidInput:
        return False
    n, r, p, salt, expected = parsed
    try:
        derived = _scrypt(pin, salt, n, r, p, dklen=len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(derived, expected)


def needs_rehash(encoded: str) -> bool:
    """Whether ``encoded`` uses weaker parameters than today's (or cannot be read at all).

    The staff service re-hashes on the next successful sign-in, when it has the PIN in hand.
    """
    parsed = _parse(encoded)
    if parsed is None:
        return True
    n, r, p, salt, expected = parsed
    return (
        n < SCRYPT_N
        or r < SCRYPT_R
        or p < SCRYPT_P
        or len(salt) < SALT_BYTES
        or len(expected) < KEY_BYTES
    )


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, *, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    numbers = parts[1:4]
    if not all(part.isascii() and part.isdigit() and len(part) <= 9 for part in numbers):
        return None
    n, r, p = (int(part) for part in numbers)
    try:
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return None
    if not salt or not 16 <= len(expected) <= 64:
        return None
    return n, r, p, salt, expected


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
