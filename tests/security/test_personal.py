"""Phone numbers and names: normalising, masking, encryption at rest and lookup hashes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.domain.errors import ConfigError, IntegrityError, InvalidInput
from edge.security.personal import PhoneVault, mask_name, mask_phone, normalize_phone

DATA_KEY = bytes(range(32))
LOOKUP_KEY = bytes(range(32, 64))
MOBILES = st.from_regex(r"\A1[3-9][0-9]{9}\Z")


@pytest.fixture
def vault() -> PhoneVault:
    return PhoneVault(DATA_KEY, LOOKUP_KEY)


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        " 138-0013-8000 ",
        "+86 138 0013 8000",
        "+8613800138000",
        "8613800138000",
        "0086 138 0013 8000",
        "１３８００１３８０００",
        "＋８６ １３８－００１３－８０００",
        "138\u30000013\u30008000",
    ],
)
def test_accepted_spellings_normalise_to_eleven_digits(raw: str) -> None:
    assert normalize_phone(raw) == "13800138000"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1380013800",
        "138001380001",
        "12800138000",
        "23800138000",
        "010-12345678",
        "86 1380013800",
        "+1 138 0013 8000",
        "1380013800a",
        "138.0013.8000",
        "1" * 10_000,
    ],
)
def test_anything_else_is_bad_phone_without_echoing_it(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_phone(raw)
    assert caught.value.code == "bad_phone"
    assert "not a mobile phone number" in caught.value.message
    if raw:
        assert raw not in caught.value.message


@pytest.mark.parametrize("raw", ["١٣٨٠٠١٣٨٠٠٠", "१३८००१३८०००", "138001380⓪0", "一三八00138000"])
def test_other_numerals_are_bad_phone_by_the_digits_rule(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_phone(raw)
    assert caught.value.code == "bad_phone"
    assert "digits 0-9 or full-width" in caught.value.message
    assert raw not in caught.value.message


@given(MOBILES, st.sampled_from(["", "+86", "86", "0086", "+86 "]), st.sampled_from(" -"))
def test_formatted_mobiles_come_back_unchanged(digits: str, prefix: str, sep: str) -> None:
    formatted = prefix + sep.join((digits[:3], digits[3:7], digits[7:]))
    assert normalize_phone(formatted) == digits


@given(st.text(max_size=40))
def test_normalize_returns_a_mobile_or_refuses(raw: str) -> None:
    try:
        result = normalize_phone(raw)
    except InvalidInput as exc:
        assert exc.code == "bad_phone"
    else:
        assert len(result) == 11
        assert result.isascii() and result.isdigit() and result[0] == "1"
        assert result[1] in "3456789"


def test_mask_phone() -> None:
    assert mask_phone("13800138000") == "138****8000"
    assert mask_phone("+86 139-1234-5678") == "139****5678"
    assert mask_phone("010-12345678") == "********5678"
    assert mask_phone("12345") == "*****"
    assert mask_phone("") == ""


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("王芳", "王*"),
        ("王小明", "王**"),
        ("欧阳娜娜", "欧***"),
        ("王先生", "王先生"),
        ("王女士", "王女士"),
        ("欧阳先生", "欧*先生"),
        ("先生", "先*"),
        ("王", "王"),
        ("", ""),
        (None, ""),
        ("   ", ""),
        ("Anna", "A***"),
        ("John  Smith ", "J*** *****"),
    ],
)
def test_mask_name(name: str | None, masked: str) -> None:
    assert mask_name(name) == masked


def test_encrypt_round_trips_and_hides_the_number(vault: PhoneVault) -> None:
    blob = vault.encrypt("+86 138-0013-8000")
    assert vault.decrypt(blob) == "13800138000"
    assert b"13800138000" not in blob
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + 11 + 16


def test_each_encryption_uses_a_fresh_nonce(vault: PhoneVault) -> None:
    blobs = {vault.encrypt("13800138000") for _ in range(20)}
    assert len(blobs) == 20


def test_encrypt_refuses_a_non_phone(vault: PhoneVault) -> None:
    with pytest.raises(InvalidInput):
        vault.encrypt("hello")


@given(data=st.data())
def test_flipping_any_bit_is_detected(data: st.DataObject) -> None:
    vault = PhoneVault(DATA_KEY, LOOKUP_KEY)
    blob = bytearray(vault.encrypt(data.draw(MOBILES)))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError) as caught:
        vault.decrypt(bytes(blob))
    assert caught.value.code == "phone_undecryptable"


@given(st.binary(max_size=80))
def test_arbitrary_blobs_are_refused(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        PhoneVault(DATA_KEY, LOOKUP_KEY).decrypt(blob)


def test_truncated_blob_and_wrong_key_are_refused(vault: PhoneVault) -> None:
    blob = vault.encrypt("13800138000")
    for broken in (blob[:-1], blob[:29], b""):
        with pytest.raises(IntegrityError):
            vault.decrypt(broken)
    other = PhoneVault(bytes(32), LOOKUP_KEY)
    with pytest.raises(IntegrityError):
        other.decrypt(blob)


def test_lookup_hash_is_keyed_hmac_of_the_normalised_number(vault: PhoneVault) -> None:
    expected = hmac.new(LOOKUP_KEY, b"13800138000", hashlib.sha256).hexdigest()
    assert vault.lookup_hash("13800138000") == expected
    assert vault.lookup_hash("+86 138 0013 8000") == expected
    assert vault.lookup_hash("１３８００１３８０００") == expected
    # Repeated calls must not share state through the prepared HMAC.
    assert vault.lookup_hash("13800138000") == expected
    assert vault.lookup_hash("13900139000") != expected


def test_lookup_hash_depends_on_the_key() -> None:
    a = PhoneVault(DATA_KEY, LOOKUP_KEY).lookup_hash("13800138000")
    b = PhoneVault(DATA_KEY, bytes(reversed(LOOKUP_KEY))).lookup_hash("13800138000")
    assert a != b
    assert a != hashlib.sha256(b"13800138000").hexdigest()


@pytest.mark.parametrize(
    ("data_key", "lookup_key"),
    [(bytes(16), LOOKUP_KEY), (DATA_KEY, bytes(8)), (DATA_KEY, DATA_KEY)],
)
def test_unusable_keys_are_a_config_error(data_key: bytes, lookup_key: bytes) -> None:
    with pytest.raises(ConfigError):
        PhoneVault(data_key, lookup_key)
