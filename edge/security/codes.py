"""Signed, compact codes that fit a QR and verify offline: member codes and printed vouchers."""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NoReturn, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.domain.clock import ensure_utc
from edge.domain.errors import InvalidInput, Refusal
from edge.security.signing import SIGNATURE_BYTES, sign_bytes, verify_bytes

__all__ = [
    "MEMBER_CODE_PREFIX",
    "VOUCHER_PREFIX",
    "MemberCodeClaims",
    "VoucherClaims",
    "VoucherKind",
    "looks_like_member_code",
    "looks_like_voucher",
    "mint_member_code",
    "sign_bytes",
    "sign_voucher",
    "unverified_voucher_claims",
    "verify_bytes",
    "verify_member_code",
    "verify_voucher",
    "voucher_device_id",
]

MEMBER_CODE_PREFIX = "M1"
VOUCHER_PREFIX = "V1"
VoucherKind = Literal["gift", "coupon"]

_MEMBER_DOMAIN = b"mck/member-code/v1"
_VOUCHER_DOMAIN = b"mck/voucher/v1"
_NONCE_BYTES = 8
_MAX_CARD_DIGITS = 20
_MAX_ID_BYTES = 64
_VOUCHER_KINDS: dict[str, int] = {"gift": 1, "coupon": 2}
_KIND_NAMES = {number: name for name, number in _VOUCHER_KINDS.items()}
# Longest well-formed code, plus slack for whitespace a scanner may add; anything longer is
# refused before any decoding work is done.
_MAX_MEMBER_TEXT = 256
_MAX_VOUCHER_TEXT = 512
_BASE32 = re.compile(r"[A-Z2-7]+")
# RFC 4648 base32 digits to the digits int(..., 32) reads (0-9 then A-V), value for value.
_TO_BASE32HEX = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHIJKLMNOPQRSTUV"
)
# Unpadded base32 length mod 8 -> bits left over after the last whole byte (other lengths
# encode no whole number of bytes).
_UNUSED_BITS = {0: 0, 2: 2, 4: 4, 5: 1, 7: 3}


@dataclass(frozen=True)
class MemberCodeClaims:
    """What a verified member code says: whose card, when it was minted, and its nonce.

    ``nonce`` (hex) is unique per code; a caller that wants single use remembers the nonces it
    accepted for as long as a code stays valid (its ttl) and refuses repeats.
    """

    card_no: str
    issued_at: datetime
    nonce: str


@dataclass(frozen=True)
class VoucherClaims:
    """What a verified voucher says: its kind, its id, and the device that printed it."""

    kind: VoucherKind
    voucher_id: str
    device_id: str


def mint_member_code(
    key: Ed25519PrivateKey, card_no: str, now: datetime, nonce: bytes | None = None
) -> str:
    """Mint the rotating code a member's phone shows: ``M1`` + base32 of the signed payload.

    The payload is issued-at (4 bytes, unix seconds), an 8-byte nonce, the card number packed
    two digits a byte, then a 64-byte Ed25519 signature: at most 140 characters, all in the QR
    alphanumeric set (upper-case base32), so the QR stays small enough for any phone camera.

    Raises:
        InvalidInput: ``bad_card_no`` when ``card_no`` is not 1 to 20 ASCII digits.
    """
    if not (card_no.isascii() and card_no.isdigit() and len(card_no) <= _MAX_CARD_DIGITS):
        raise InvalidInput(f"A card number is 1 to {_MAX_CARD_DIGITS} digits.", code="bad_card_no")
    if nonce is None:
        nonce = os.urandom(_NONCE_BYTES)
    if len(nonce) != _NONCE_BYTES:
        raise ValueError(f"a member code nonce is {_NONCE_BYTES} bytes, got {len(nonce)}")
    issued = math.floor(ensure_utc(now).timestamp())
    signed = issued.to_bytes(4, "big") + nonce + _pack_digits(card_no)
    return MEMBER_CODE_PREFIX + _b32(signed + sign_bytes(key, _MEMBER_DOMAIN, signed))


def verify_member_code(
    public_key: Ed25519PublicKey, code: str, now: datetime, ttl_s: int = 60, skew_s: int = 90
) -> MemberCodeClaims:
    """Check a scanned member code offline: well-formed, signed by HQ, and fresh.

    A code is fresh from ``skew_s`` before its issue time to ``ttl_s`` after it, both ends
    included. HQ mints every code with HQ's own clock (the phone only shows it), so the kiosk
    refuses it once ``ttl_s`` have passed by its own clock; the skew only keeps a kiosk whose
    clock lags HQ's from refusing a fresh code as dated in the future. This function
    does not detect replays within that window: that needs storage, so it is the caller's job,
    keyed on ``claims.nonce``. Any input at all (huge, binary, truncated) ends in claims or a
    :class:`Refusal`, never another exception.

    Raises:
        Refusal: ``code_malformed``, ``code_bad_signature``, ``code_expired`` or
            ``code_not_yet_valid``.
    """
    raw = _unarmour(MEMBER_CODE_PREFIX, code, _MAX_MEMBER_TEXT)
    signed, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    fixed = 4 + _NONCE_BYTES
    card_no = _unpack_digits(signed[fixed:]) if len(raw) > fixed + SIGNATURE_BYTES else None
    if card_no is None:
        _malformed()
    if not verify_bytes(public_key, _MEMBER_DOMAIN, signed, signature):
        raise Refusal("This member code is not genuine.", code="code_bad_signature")
    issued_at = datetime.fromtimestamp(int.from_bytes(signed[:4], "big"), UTC)
    moment = ensure_utc(now)
    if moment > issued_at + timedelta(seconds=ttl_s):
        raise Refusal(
            "This member code has expired; refresh it on the phone.",
            code="code_expired",
            issued_at=issued_at.isoformat(),
        )
    if issued_at > moment + timedelta(seconds=skew_s):
        raise Refusal(
            "This member code is dated in the future; check the phone's clock.",
            code="code_not_yet_valid",
            issued_at=issued_at.isoformat(),
        )
    return MemberCodeClaims(card_no=card_no, issued_at=issued_at, nonce=signed[4:fixed].hex())


def looks_like_member_code(text: str) -> bool:
    """Cheap routing test for the scanner: does this text claim to be a member code?"""
    return text[:8].lstrip().startswith(MEMBER_CODE_PREFIX)


def looks_like_voucher(text: str) -> bool:
    """Cheap routing test for the scanner: does this text claim to be a signed voucher?"""
    return text[:8].lstrip().startswith(VOUCHER_PREFIX)


def sign_voucher(key: Ed25519PrivateKey, kind: VoucherKind, voucher_id: str, device_id: str) -> str:
    """Sign a voucher this device prints: ``V1`` + base32 of kind, device, id and signature.

    Lanes and HQ verify it with the printing device's public key, so a photocopied or edited
    voucher id fails, and a voucher only this device could have printed names that device.

    Raises:
        InvalidInput: ``bad_voucher`` for an unknown kind or an id that is empty, longer than
            64 UTF-8 bytes, or not printable.
    """
    if kind not in _VOUCHER_KINDS:
        raise InvalidInput(f"Unknown voucher kind {kind!r}.", code="bad_voucher")
    signed = (
        bytes([_VOUCHER_KINDS[kind]])
        + _pack_id(device_id, "device id")
        + _pack_id(voucher_id, "voucher id")
    )
    return VOUCHER_PREFIX + _b32(signed + sign_bytes(key, _VOUCHER_DOMAIN, signed))


def verify_voucher(public_key: Ed25519PublicKey, code: str) -> VoucherClaims:
    """Check a scanned voucher against the public key of the device that printed it.

    Whether the voucher was already used is for the caller's ledger to say.

    Raises:
        Refusal: ``code_malformed`` or ``code_bad_signature``.
    """
    kind, device_id, voucher_id, signed, signature = _parse_voucher(code)
    if not verify_bytes(public_key, _VOUCHER_DOMAIN, signed, signature):
        raise Refusal("This voucher is not genuine.", code="code_bad_signature")
    return VoucherClaims(kind=kind, voucher_id=voucher_id, device_id=device_id)


def voucher_key_text(public_key: Ed25519PublicKey) -> str:
    """A device's voucher-signing public key as it travels to HQ: raw Ed25519, base64url."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def voucher_key_from_text(text: str) -> Ed25519PublicKey:
    """The key :func:`voucher_key_text` wrote.

    Raises:
        InvalidInput: ``bad_key`` for text that is not one.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidInput("not a device's public key", code="bad_key") from None


def voucher_device_id(code: str) -> str:
    """The device a voucher claims to come from, unverified: only for picking its public key.

    Raises:
        Refusal: ``code_malformed``.
    """
    return _parse_voucher(code)[1]


def unverified_voucher_claims(code: str) -> VoucherClaims:
    """What a voucher says, its signature unchecked: for a voucher of another device, whose
    public key this device does not hold; whoever holds it must still verify the code.

    Raises:
        Refusal: ``code_malformed``.
    """
    kind, device_id, voucher_id, _signed, _signature = _parse_voucher(code)
    return VoucherClaims(kind=kind, voucher_id=voucher_id, device_id=device_id)


def _parse_voucher(code: str) -> tuple[VoucherKind, str, str, bytes, bytes]:
    raw = _unarmour(VOUCHER_PREFIX, code, _MAX_VOUCHER_TEXT)
    signed, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    if len(raw) <= SIGNATURE_BYTES or signed[0] not in _KIND_NAMES:
        _malformed()
    device_id, rest = _unpack_id(signed[1:])
    voucher_id, rest = _unpack_id(rest)
    if rest:
        _malformed()
    kind = cast(VoucherKind, _KIND_NAMES[signed[0]])
    return kind, device_id, voucher_id, signed, signature


def _pack_digits(digits: str) -> bytes:
    """Two digits a byte; an odd count ends in the nibble 0xF (leading zeros survive)."""
    padded = digits + "F" if len(digits) % 2 else digits
    return bytes.fromhex(padded)


def _unpack_digits(packed: bytes) -> str | None:
    if not 0 < len(packed) <= (_MAX_CARD_DIGITS + 1) // 2:
        return None
    text = packed.hex()
    if text.endswith("f"):
        text = text[:-1]
    return text if text.isdigit() else None


def _pack_id(value: str, what: str) -> bytes:
    encoded = value.encode("utf-8", errors="replace")
    if not value or not value.isprintable() or len(encoded) > _MAX_ID_BYTES:
        raise InvalidInput(
            f"A {what} is 1 to {_MAX_ID_BYTES} printable characters (UTF-8 bytes).",
            code="bad_voucher",
        )
    return bytes([len(encoded)]) + encoded


def _unpack_id(data: bytes) -> tuple[str, bytes]:
    if not data or not 0 < data[0] <= _MAX_ID_BYTES or len(data) < 1 + data[0]:
        _malformed()
    try:
        value = data[1 : 1 + data[0]].decode("utf-8")
    except UnicodeDecodeError:
        _malformed()
    if not value.isprintable():
        _malformed()
    return value, data[1 + data[0] :]


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _unarmour(prefix: str, code: str, max_text: int) -> bytes:
    """Prefix, then upper-case base32 without padding, in its one canonical spelling.

    Decoded as one big integer, in C: the standard library's base32 is pure Python and took
    about a fifth of a member code's check. The text's 5-bit digits make the bytes, less the
    unused bits at the end, which must be zero, or the same bytes would have two spellings.
    """
    if not isinstance(code, str) or len(code) > max_text:
        _malformed()
    text = code.strip()
    body = text[len(prefix) :]
    if not text.startswith(prefix) or not _BASE32.fullmatch(body):
        _malformed()
    unused = _UNUSED_BITS.get(len(body) % 8)
    if unused is None:  # a length no whole number of bytes encodes to
        _malformed()
    value = int(body.translate(_TO_BASE32HEX), 32)
    if value & ((1 << unused) - 1):  # unused trailing bits set: a second spelling
        _malformed()
    return (value >> unused).to_bytes(len(body) * 5 // 8, "big")


def _malformed() -> NoReturn:
    raise Refusal("This is not a code we can read.", code="code_malformed")
