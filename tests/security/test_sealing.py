"""Sealing a secret to a device's EC key: only that key, purpose and identity open it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edge.domain.errors import IntegrityError
from edge.provisioning.bundle import lookup_key_id, seal_lookup_key, unseal_lookup_key
from edge.security.sealing import SEAL_VERSION, seal, unseal

PURPOSE = b"mck/lookup-key/v1"


@pytest.fixture(scope="module")
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_round_trip_gives_back_the_secret_and_each_seal_differs(device_key):
    secret = os.urandom(32)
    blob = seal(device_key.public_key(), secret, purpose=PURPOSE, context=("K001", "serial-1"))
    assert blob[0] == SEAL_VERSION
    assert len(blob) == 1 + 33 + 32 + 16  # version, compressed point, ciphertext, tag
    assert secret not in blob
    again = seal(device_key.public_key(), secret, purpose=PURPOSE, context=("K001", "serial-1"))
    assert again != blob  # a fresh ephemeral key every time
    for sealed in (blob, again):
        opened = unseal(device_key, sealed, purpose=PURPOSE, context=("K001", "serial-1"))
        assert opened == secret


def test_another_device_key_cannot_open_it(device_key):
    blob = seal(device_key.public_key(), b"k" * 32, purpose=PURPOSE, context=("K001", "s1"))
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(IntegrityError) as err:
        unseal(other, blob, purpose=PURPOSE, context=("K001", "s1"))
    assert err.value.code == "seal_invalid"


def test_a_tampered_blob_fails_wherever_it_is_changed(device_key):
    blob = seal(device_key.public_key(), b"k" * 32, purpose=PURPOSE, context=("K001", "s1"))
    for index in (0, 5, 40, len(blob) - 1):  # version, ephemeral point, ciphertext, tag
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError) as err:
            unseal(device_key, bytes(tampered), purpose=PURPOSE, context=("K001", "s1"))
        assert err.value.code == "seal_invalid", index
    for cut in (blob[:20], blob[:-1], b""):
        with pytest.raises(IntegrityError):
            unseal(device_key, cut, purpose=PURPOSE, context=("K001", "s1"))


def test_another_device_id_serial_or_purpose_fails(device_key):
    blob = seal(device_key.public_key(), b"k" * 32, purpose=PURPOSE, context=("K001", "s1"))
    for purpose, context in (
        (PURPOSE, ("K002", "s1")),
        (PURPOSE, ("K001", "s2")),
        (PURPOSE, ("K001s", "1")),  # the parts are length-prefixed, not just joined
        (PURPOSE, ("K001",)),
        (b"mck/other/v1", ("K001", "s1")),
    ):
        with pytest.raises(IntegrityError) as err:
            unseal(device_key, blob, purpose=purpose, context=context)
        assert err.value.code == "seal_invalid", (purpose, context)


def test_the_bundle_helpers_name_the_lookup_key_and_refuse_garbage(device_key):
    key = os.urandom(32)
    sealed = seal_lookup_key(key, device_key.public_key(), "K001", "serial-1")
    assert len(sealed) == 112  # what the bundle carries (base64 of 82 bytes)
    assert unseal_lookup_key(sealed, device_key, "K001", "serial-1") == key
    for bad in ("", "not base64!", base64.b64encode(b"\x01" + b"\x00" * 60).decode()):
        with pytest.raises(IntegrityError) as err:
            unseal_lookup_key(bad, device_key, "K001", "serial-1")
        assert err.value.code == "lookup_key_invalid"
    with pytest.raises(IntegrityError) as other_id:
        unseal_lookup_key(sealed, device_key, "K002", "serial-1")
    assert other_id.value.code == "lookup_key_invalid"
    # the fingerprint names a key in records without revealing it
    fingerprint = lookup_key_id(key)
    assert fingerprint == lookup_key_id(bytes(bytearray(key)))  # the same key, another object
    assert fingerprint != lookup_key_id(os.urandom(32))
    assert fingerprint != lookup_key_id(key[:-1] + bytes([key[-1] ^ 1]))  # one bit apart
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    # keyed (HMAC-SHA256 under the key): neither the key's bytes nor its plain hash
    assert fingerprint not in key.hex()
    assert fingerprint != hashlib.sha256(key).hexdigest()[:16]
    expected = hmac.new(key, b"mck/lookup-key-id", hashlib.sha256).hexdigest()[:16]
    assert fingerprint == expected
