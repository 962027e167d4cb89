"""Printed vouchers and the generic signing helpers beneath them."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.errors import InvalidInput, Refusal
from edge.security.codes import (
    VoucherClaims,
    looks_like_voucher,
    mint_member_code,
    sign_voucher,
    verify_voucher,
    voucher_device_id,
)
from edge.security.signing import sign_bytes, verify_bytes

from .sample_keys import HQ_KEY, OTHER_KEY

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
IDS = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs")
    ),
    min_size=1,
    max_size=16,
)


def _refusal_code(public: Ed25519PublicKey, code: str) -> str:
    with pytest.raises(Refusal) as caught:
        verify_voucher(public, code)
    return caught.value.code


def _decode(code: str) -> bytes:
    body = code[2:]
    return base64.b32decode(body + "=" * (-len(body) % 8))


def _encode(raw: bytes) -> str:
    return "V1" + base64.b32encode(raw).decode().rstrip("=")


@given(kind=st.sampled_from(["gift", "coupon"]), voucher_id=IDS, device_id=IDS)
def test_round_trip(kind: str, voucher_id: str, device_id: str) -> None:
    code = sign_voucher(HQ_KEY, kind, voucher_id, device_id)  # type: ignore[arg-type]
    assert verify_voucher(HQ_KEY.public_key(), code) == VoucherClaims(
        kind=kind,  # type: ignore[arg-type]
        voucher_id=voucher_id,
        device_id=device_id,
    )
    assert voucher_device_id(code) == device_id
    assert code.isascii() and code.startswith("V1")
    assert looks_like_voucher(code)


def test_a_typical_voucher_is_qr_friendly(hq_key: Ed25519PrivateKey) -> None:
    code = sign_voucher(hq_key, "coupon", "01JNV7Q5W2X8M3K4P6R9T0YZAB", "K001")
    assert len(code) <= 160
    assert set(code[2:]) <= set(BASE32)


def test_wrong_device_key_is_a_bad_signature(
    hq_key: Ed25519PrivateKey, other_public: Ed25519PublicKey
) -> None:
    code = sign_voucher(hq_key, "gift", "G-1", "K001")
    assert _refusal_code(other_public, code) == "code_bad_signature"


def test_swapping_kind_or_device_breaks_the_signature(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    raw = bytearray(_decode(sign_voucher(hq_key, "gift", "G-1", "K001")))
    raw[0] = 2  # gift -> coupon
    assert _refusal_code(hq_public, _encode(bytes(raw))) == "code_bad_signature"
    raw = bytearray(_decode(sign_voucher(hq_key, "gift", "G-1", "K001")))
    raw[2:6] = b"K002"
    forged = _encode(bytes(raw))
    assert voucher_device_id(forged) == "K002"  # the peek is unverified by design...
    assert _refusal_code(hq_public, forged) == "code_bad_signature"  # ...the check is not


@settings(max_examples=200)
@given(data=st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    code = sign_voucher(HQ_KEY, "gift", data.draw(IDS), "K001")
    index = data.draw(st.integers(0, len(code) - 1))
    replacement = data.draw(st.sampled_from(BASE32 + "M1V").filter(lambda ch: ch != code[index]))
    forged = code[:index] + replacement + code[index + 1 :]
    assert _refusal_code(HQ_KEY.public_key(), forged) in {"code_malformed", "code_bad_signature"}


@settings(max_examples=200)
@given(data=st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    raw = bytearray(_decode(sign_voucher(HQ_KEY, "coupon", data.draw(IDS), "K001")))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    assert _refusal_code(HQ_KEY.public_key(), _encode(bytes(raw))) in {
        "code_malformed",
        "code_bad_signature",
    }


def test_a_member_code_is_not_a_voucher(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    from datetime import UTC, datetime

    member = mint_member_code(hq_key, "1234", datetime(2025, 1, 1, tzinfo=UTC))
    assert not looks_like_voucher(member)
    assert _refusal_code(hq_public, member) == "code_malformed"
    with pytest.raises(Refusal, match="not a code"):
        voucher_device_id(member)


def test_a_voucher_signature_cannot_be_reused_in_another_domain(
    hq_key: Ed25519PrivateKey, hq_public: Ed25519PublicKey
) -> None:
    raw = _decode(sign_voucher(hq_key, "gift", "G-1", "K001"))
    signed = raw[:-64]
    forged = _encode(signed + sign_bytes(hq_key, b"mck/member-code/v1", signed))
    assert _refusal_code(hq_public, forged) == "code_bad_signature"


def _only_refusals(text: str) -> None:
    with pytest.raises(Refusal) as caught:
        verify_voucher(HQ_KEY.public_key(), text)
    assert caught.value.code in {"code_malformed", "code_bad_signature"}
    try:
        device_id = voucher_device_id(text)
    except Refusal as exc:
        assert exc.code == "code_malformed"
    else:  # the unverified peek may read a well-formed forgery, but only a usable id
        assert device_id and device_id.isprintable()


@given(st.text())
def test_arbitrary_text_is_only_ever_refused(text: str) -> None:
    _only_refusals(text)
    _only_refusals("V1" + text)


@given(st.binary(max_size=300))
def test_binary_garbage_is_only_ever_refused(blob: bytes) -> None:
    _only_refusals(blob.decode("latin-1"))
    _only_refusals(_encode(blob))


@given(st.binary(max_size=120))
def test_random_payloads_never_verify(blob: bytes) -> None:
    with pytest.raises(Refusal):
        verify_voucher(HQ_KEY.public_key(), _encode(blob))


@pytest.mark.parametrize("text", ["", "V1", "V1" + "A" * 1_000_000, "v1abc", "V1\x00"])
def test_garbage_is_malformed(hq_public: Ed25519PublicKey, text: str) -> None:
    assert _refusal_code(hq_public, text) == "code_malformed"
    with pytest.raises(Refusal):
        voucher_device_id(text)


@pytest.mark.parametrize(
    ("kind", "voucher_id", "device_id"),
    [
        ("points", "G-1", "K001"),
        ("gift", "", "K001"),
        ("gift", "G-1", ""),
        ("gift", "G\n1", "K001"),
        ("gift", "G" * 65, "K001"),
        ("gift", "G-1", "店" * 22),
    ],
)
def test_sign_refuses_unusable_fields(
    hq_key: Ed25519PrivateKey, kind: str, voucher_id: str, device_id: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        sign_voucher(hq_key, kind, voucher_id, device_id)  # type: ignore[arg-type]
    assert caught.value.code == "bad_voucher"


def test_sign_and_verify_bytes() -> None:
    public = HQ_KEY.public_key()
    signature = sign_bytes(HQ_KEY, b"mck/command/v1", b"reboot")
    assert len(signature) == 64
    assert verify_bytes(public, b"mck/command/v1", b"reboot", signature)
    assert not verify_bytes(public, b"mck/command/v1", b"reboot!", signature)
    assert not verify_bytes(public, b"mck/command/v2", b"reboot", signature)
    assert not verify_bytes(OTHER_KEY.public_key(), b"mck/command/v1", b"reboot", signature)
    assert not verify_bytes(public, b"mck/command/v1", b"reboot", signature[:-1])
    assert not verify_bytes(public, b"mck/command/v1", b"reboot", b"")
    # Without framing, domain "ab" + message "c" and "a" + "bc" would be the same bytes.
    assert not verify_bytes(public, b"a", b"bc", sign_bytes(HQ_KEY, b"ab", b"c"))


def test_a_signing_domain_is_required() -> None:
    with pytest.raises(ValueError, match="domain"):
        sign_bytes(HQ_KEY, b"", b"message")
    with pytest.raises(ValueError, match="domain"):
        sign_bytes(HQ_KEY, b"x" * 256, b"message")
