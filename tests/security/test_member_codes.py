"""Member codes: compact, signed by HQ, fresh for their ttl (a skew allowed before their
issue time, for a kiosk clock behind HQ's), and refused otherwise."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.errors import InvalidInput, Refusal
from edge.security.codes import (
    MemberCodeClaims,
    looks_like_member_code,
    mint_member_code,
    sign_voucher,
    verify_member_code,
)
from edge.security.signing import sign_bytes

from .sample_keys import HQ_KEY

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
QR_ALPHANUMERIC = re.compile(r"[0-9A-Z $%*+\-./:]+")
T0 = datetime(2025, 3, 8, 9, 30, 0, tzinfo=UTC)
CARDS = st.text(alphabet="0123456789", min_size=1, max_size=20)


def _refusal_code(public: Ed25519PublicKey, code: str, now: datetime = T0) -> str:
    with pytest.raises(Refusal) as caught:
        verify_member_code(public, code, now)
    return caught.value.code


def _decode(code: str) -> bytes:
    body = code[2:]
    return base64.b32decode(body + "=" * (-len(body) % 8))


def _encode(raw: bytes) -> str:
    return "M1" + base64.b32encode(raw).decode().rstrip("=")


@given(
    card_no=CARDS, seconds=st.integers(0, 2**32 - 1 - 200), nonce=st.binary(min_size=8, max_size=8)
)
def test_round_trip(card_no: str, seconds: int, nonce: bytes) -> None:
    issued = datetime.fromtimestamp(seconds, UTC)
    code = mint_member_code(HQ_KEY, card_no, issued, nonce=nonce)
    claims = verify_member_code(HQ_KEY.public_key(), code, issued + timedelta(seconds=30))
    assert claims == MemberCodeClaims(card_no=card_no, issued_at=issued, nonce=nonce.hex())
    assert len(code) <= 140
    assert QR_ALPHANUMERIC.fullmatch(code)
    assert looks_like_member_code(code)


def test_leading_zeros_and_fresh_nonces(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    codes = {mint_member_code(hq_key, "00012", T0) for _ in range(10)}
    assert len(codes) == 10
    claims = [verify_member_code(hq_public, code, T0) for code in codes]
    assert {c.card_no for c in claims} == {"00012"}
    assert len({c.nonce for c in claims}) == 10
    assert all(len(c.nonce) == 16 for c in claims)


def test_issued_at_is_whole_seconds(hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey) -> None:
    code = mint_member_code(hq_key, "1", T0 + timedelta(milliseconds=999))
    assert verify_member_code(hq_public, code, T0).issued_at == T0


def test_other_timezones_mean_the_same_instant(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    from zoneinfo import ZoneInfo

    shanghai = T0.astimezone(ZoneInfo("Asia/Shanghai"))
    claims = verify_member_code(hq_public, mint_member_code(hq_key, "42", shanghai), T0)
    assert claims.issued_at == T0
    assert claims.issued_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("offset_s", "outcome"),
    [
        (0, None),
        (60, None),
        (61, "code_expired"),
        (150, "code_expired"),
        (10_000, "code_expired"),
        (-90, None),
        (-91, "code_not_yet_valid"),
        (-10_000, "code_not_yet_valid"),
    ],
)
def test_freshness_boundaries(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey, offset_s: int, outcome: str | None
) -> None:
    code = mint_member_code(hq_key, "8800001234", T0)
    now = T0 + timedelta(seconds=offset_s)
    if outcome is None:
        assert verify_member_code(hq_public, code, now).card_no == "8800001234"
    else:
        assert _refusal_code(hq_public, code, now) == outcome


def test_expiry_is_exclusive_of_the_next_instant(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1", T0)
    assert _refusal_code(hq_public, code, T0 + timedelta(seconds=60, microseconds=1)) == (
        "code_expired"
    )


def test_ttl_and_skew_are_the_callers(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1", T0)
    later = T0 + timedelta(seconds=40)
    assert verify_member_code(hq_public, code, later, ttl_s=40, skew_s=0).card_no == "1"
    with pytest.raises(Refusal, match="expired"):  # the skew does not lengthen its life
        verify_member_code(hq_public, code, later, ttl_s=39, skew_s=600)
    with pytest.raises(Refusal, match="future"):
        verify_member_code(hq_public, code, T0 - timedelta(seconds=11), skew_s=10)


def test_wrong_key_is_a_bad_signature(
    hq_key: Ed25519PrivateKey, other_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1234567890", T0)
    assert _refusal_code(other_public, code) == "code_bad_signature"


def test_signature_is_checked_before_freshness(
    hq_key: Ed25519PrivateKey, other_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1", T0)
    assert _refusal_code(other_public, code, T0 + timedelta(days=1)) == "code_bad_signature"


@settings(max_examples=200)
@given(data=st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    code = mint_member_code(HQ_KEY, data.draw(CARDS), T0)
    index = data.draw(st.integers(0, len(code) - 1))
    replacement = data.draw(st.sampled_from(BASE32 + "M1V").filter(lambda ch: ch != code[index]))
    forged = code[:index] + replacement + code[index + 1 :]
    assert _refusal_code(HQ_KEY.public_key(), forged) in {"code_malformed", "code_bad_signature"}


@settings(max_examples=200)
@given(data=st.data())
def test_any_flipped_payload_bit_is_refused(data: st.DataObject) -> None:
    raw = bytearray(_decode(mint_member_code(HQ_KEY, data.draw(CARDS), T0)))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    assert _refusal_code(HQ_KEY.public_key(), _encode(bytes(raw))) in {
        "code_malformed",
        "code_bad_signature",
    }


def test_truncated_and_extended_codes_are_refused(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1234", T0)
    for broken in (code[:-1], code[:-8], code[:2], code + "A", code + "AAAAAAAA"):
        assert _refusal_code(hq_public, broken) in {"code_malformed", "code_bad_signature"}


def test_a_signature_from_another_domain_is_refused(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    raw = _decode(mint_member_code(hq_key, "1234", T0))
    signed = raw[:-64]
    for domain in (b"mck/voucher/v1", b"mck/member-code/v2"):
        forged = _encode(signed + sign_bytes(hq_key, domain, signed))
        assert _refusal_code(hq_public, forged) == "code_bad_signature"


def test_surrounding_whitespace_from_a_scanner_is_tolerated(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    code = mint_member_code(hq_key, "1234", T0)
    assert verify_member_code(hq_public, f" {code}\r\n", T0).card_no == "1234"
    assert looks_like_member_code(f"\t{code}\n")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "M1",
        "M1====",
        "m1abc",
        "M1" + "A" * 10_000_000,
        "M1" + "a" * 130,
        "M1 " + "A" * 130,
        "M1\x00\xff",
        "M1\ud800",
        "http://example.com/M1",
    ],
)
def test_garbage_is_malformed(hq_public: Ed25519PublicKey, text: str) -> None:
    assert _refusal_code(hq_public, text) == "code_malformed"


def test_a_voucher_is_not_a_member_code(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    voucher = sign_voucher(hq_key, "gift", "G1", "K001")
    assert not looks_like_member_code(voucher)
    assert _refusal_code(hq_public, voucher) == "code_malformed"


def _only_refusals(text: str) -> None:
    try:
        verify_member_code(HQ_KEY.public_key(), text, T0)
    except Refusal as exc:
        assert exc.code in {"code_malformed", "code_bad_signature"}
    else:
        pytest.fail(f"accepted {text!r}")


@given(st.text())
def test_arbitrary_text_is_only_ever_refused(text: str) -> None:
    _only_refusals(text)
    _only_refusals("M1" + text)


@given(st.binary(max_size=300))
def test_binary_garbage_is_only_ever_refused(blob: bytes) -> None:
    _only_refusals(blob.decode("latin-1"))
    _only_refusals("M1" + blob.decode("latin-1"))


@given(st.binary(max_size=120))
def test_well_armoured_random_payloads_are_only_ever_refused(blob: bytes) -> None:
    _only_refusals(_encode(blob))


@given(st.text(alphabet=BASE32 + "=", max_size=200))
def test_random_base32_is_only_ever_refused(body: str) -> None:
    _only_refusals("M1" + body)


@pytest.mark.parametrize("card_no", ["", "12a", "１２３", "1" * 21, " 123", "-1"])
def test_mint_refuses_bad_card_numbers(hq_key: Ed25519PrivateKey, card_no: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        mint_member_code(hq_key, card_no, T0)
    assert caught.value.code == "bad_card_no"


def test_mint_refuses_naive_time_and_odd_nonces(hq_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="naive"):
        mint_member_code(hq_key, "1", datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="nonce"):
        mint_member_code(hq_key, "1", T0, nonce=b"short")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("M1ABC", True),
        ("  M1ABC", True),
        ("V1ABC", False),
        ("m1abc", False),
        ("", False),
        ("M", False),
    ],
)
def test_looks_like_member_code(text: str, expected: bool) -> None:
    assert looks_like_member_code(text) is expected


def _stdlib_unarmour(body: str) -> bytes | None:
    """The reference: the standard library's base32, canonical spellings only."""
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:  # binascii.Error is a ValueError
        return None
    return raw if base64.b32encode(raw).decode().rstrip("=") == body else None


@settings(max_examples=500)
@given(
    data=st.one_of(
        st.binary(max_size=90).map(lambda raw: base64.b32encode(raw).decode().rstrip("=")),
        st.text(alphabet=BASE32, min_size=1, max_size=150),
    )
)
def test_codes_decode_exactly_as_the_standard_librarys_base32(data: str) -> None:
    from edge.security.codes import _unarmour

    expected = _stdlib_unarmour(data)
    if expected is None or not data:
        with pytest.raises(Refusal):
            _unarmour("M1", "M1" + data, 256)
    else:
        assert _unarmour("M1", "M1" + data, 256) == expected
