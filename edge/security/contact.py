"""A member's phone number sealed for HQ only, for the messages the member agreed to.

The kiosk seals the number to HQ's contact key (an EC P-256 key pair whose private half,
``hq-contact.pem``, never leaves HQ) with :mod:`edge.security.sealing`, bound to the member's
id: a blob copied onto another member fails to open. The kiosk keeps only the public half
(``keys/hq-contact.pub``, from the enrolment bundle), so nothing on the kiosk, in its
database or in its backups opens the blob.

Both sides use these definitions: the kiosk seals (:func:`seal_phone`), HQ opens
(:func:`open_phone`).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.domain.errors import ConfigError, IntegrityError
from edge.security.keys import read_key_file, refuse_loose_permissions
from edge.security.personal import normalize_phone
from edge.security.sealing import seal, unseal

CONTACT_PURPOSE = b"mck/contact-phone/v1"
MAX_SEALED_PHONE = 256
"""Characters of base64 a sealed phone number takes at most (it takes about 100)."""
_MOBILE = re.compile(r"1[3-9][0-9]{9}")  # what normalize_phone gives

__all__ = [
    "CONTACT_PURPOSE",
    "MAX_SEALED_PHONE",
    "contact_public_pem",
    "load_contact_private_key",
    "load_contact_public_key",
    "open_phone",
    "parse_contact_public_key",
    "seal_phone",
]


def seal_phone(recipient: ec.EllipticCurvePublicKey, phone: str, member_id: str) -> str:
    """The member's phone number sealed to HQ's contact key, as base64.

    Raises:
        InvalidInput: ``bad_phone`` when it is not a mobile number.
    """
    blob = seal(
        recipient,
        normalize_phone(phone).encode("ascii"),
        purpose=CONTACT_PURPOSE,
        context=(member_id,),
    )
    return base64.b64encode(blob).decode("ascii")


def open_phone(private: ec.EllipticCurvePrivateKey, sealed: str, member_id: str) -> str:
    """HQ's side: the phone number a kiosk sealed for ``member_id``.

    Raises:
        IntegrityError: ``seal_invalid``: garbled, sealed to another key or for another
            member, or not a phone number inside.
    """
    try:
        blob = base64.b64decode(sealed, validate=True)
    except (ValueError, binascii.Error):
        raise IntegrityError("the sealed phone number is not base64", code="seal_invalid") from None
    plain = unseal(private, blob, purpose=CONTACT_PURPOSE, context=(member_id,))
    text = plain.decode("ascii", errors="replace")
    if not _MOBILE.fullmatch(text):
        raise IntegrityError("the sealed phone number holds no phone number", code="seal_invalid")
    return text


def parse_contact_public_key(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    """HQ's contact public key from PEM (SubjectPublicKeyInfo, P-256).

    Raises:
        ConfigError: ``key_invalid``, naming ``where`` it came from.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{where} is not a PEM public key: {exc}", code="key_invalid", path=where
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{where} is not an EC P-256 public key (HQ's contact key)",
            code="key_invalid",
            path=where,
        )
    return key


def load_contact_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """HQ's contact public key from a PEM file.

    Raises:
        ConfigError: ``key_unreadable`` or ``key_invalid``.
    """
    return parse_contact_public_key(read_key_file(path), str(path))


def load_contact_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """HQ's contact private key (``hq-contact.pem``, unencrypted PKCS#8, P-256).

    Raises:
        ConfigError: ``key_unreadable``, ``key_permissions`` (readable by others) or
            ``key_invalid``.
    """
    refuse_loose_permissions(path)
    pem = read_key_file(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key: {exc}",
            code="key_invalid",
            path=str(path),
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{path} is not an EC P-256 private key (HQ's contact key)",
            code="key_invalid",
            path=str(path),
        )
    return key


_P256_COMPRESSED_SPKI = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
"""DER of a P-256 SubjectPublicKeyInfo up to its (compressed, 33-byte) point."""


def contact_public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The public half as PEM (SubjectPublicKeyInfo), as the enrolment bundle carries it.

    The point is compressed (RFC 5480 allows it; OpenSSL reads it): 32 bytes fewer, which
    keeps a bundle carrying HQ's keys within one QR code.
    """
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    body = base64.b64encode(_P256_COMPRESSED_SPKI + point).decode("ascii")
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"
