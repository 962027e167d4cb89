"""Sealing a secret to one device's EC key (ECIES), so it can travel in the clear.

HQ seals, the device unseals: the sealed blob may be printed, photographed or copied, and only
the holder of the recipient's private key (which never leaves the device) can open it.

Construction: an ephemeral key pair on the recipient's curve; ECDH with the recipient's public
key; HKDF-SHA256 over the shared secret (salt: both public keys, info: the purpose) gives a
one-time AES-256-GCM key and nonce; the context (e.g. device id and serial) is the AEAD's
associated data, so a blob opened under another context fails. The blob is::

    version (1 byte) | ephemeral public key (compressed point) | ciphertext + 16-byte tag

A fresh ephemeral key per seal makes the derived key single-use, so deriving the nonce from
the key schedule (as HPKE does) is safe and keeps the blob short (82 bytes for 32 on P-256).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.domain.errors import IntegrityError, InvalidInput

SEAL_VERSION = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def _point_bytes(curve: ec.EllipticCurve) -> int:
    return 1 + (curve.key_size + 7) // 8


def _associated_data(purpose: bytes, context: Sequence[str]) -> bytes:
    """Purpose and context parts, each length-prefixed (no two contexts encode alike)."""
    out = bytearray()
    for part in (purpose, *(p.encode("utf-8") for p in context)):
        if len(part) > 0xFFFF:
            raise InvalidInput("a sealing context part is too long", code="seal_context")
        out += len(part).to_bytes(2, "big") + part
    return bytes(out)


def _key_schedule(
    shared: bytes,
    ephemeral: ec.EllipticCurvePublicKey,
    recipient: ec.EllipticCurvePublicKey,
    purpose: bytes,
) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_BYTES + _NONCE_BYTES,
        salt=_point(ephemeral) + _point(recipient),
        info=purpose,
    ).derive(shared)
    return okm[:_KEY_BYTES], okm[_KEY_BYTES:]


def seal(
    recipient: ec.EllipticCurvePublicKey,
    secret: bytes,
    *,
    purpose: bytes,
    context: Sequence[str],
) -> bytes:
    """``secret`` sealed so that only ``recipient``'s private key opens it, under ``context``.

    ``purpose`` names what the secret is for (e.g. ``b"mck/lookup-key/v1"``); ``context``
    binds it to its recipient's identity (e.g. device id and serial). Both must be given again
    to :func:`unseal`.
    """
    if not purpose:
        raise InvalidInput("a sealed secret needs a purpose", code="seal_context")
    aad = _associated_data(purpose, context)
    ephemeral = ec.generate_private_key(recipient.curve)
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    key, nonce = _key_schedule(shared, ephemeral.public_key(), recipient, purpose)
    sealed = AESGCM(key).encrypt(nonce, secret, aad)
    return bytes([SEAL_VERSION]) + _point(ephemeral.public_key()) + sealed


def unseal(
    private: ec.EllipticCurvePrivateKey,
    blob: bytes,
    *,
    purpose: bytes,
    context: Sequence[str],
) -> bytes:
    """The secret :func:`seal` sealed to ``private``'s public half under the same purpose and
    context.

    Raises:
        IntegrityError: ``seal_invalid``: the blob is damaged or truncated, has an unknown
            version, was sealed to another key, or for another purpose or context.
    """
    curve = private.curve
    head = 1 + _point_bytes(curve)
    if len(blob) < head + _TAG_BYTES or blob[0] != SEAL_VERSION:
        raise IntegrityError(
            "the sealed secret is damaged or in an unknown format", code="seal_invalid"
        )
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(curve, blob[1:head])
    except ValueError:
        raise IntegrityError(
            "the sealed secret is damaged (not a point on the device key's curve)",
            code="seal_invalid",
        ) from None
    recipient = private.public_key()
    shared = private.exchange(ec.ECDH(), ephemeral)
    key, nonce = _key_schedule(shared, ephemeral, recipient, purpose)
    try:
        return AESGCM(key).decrypt(nonce, blob[head:], _associated_data(purpose, context))
    except InvalidTag:
        raise IntegrityError(
            "the sealed secret does not open: it was sealed to another device's key or "
            "identity, or it was altered",
            code="seal_invalid",
        ) from None
