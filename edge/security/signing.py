"""Ed25519 signatures with domain separation, for codes now and signed HQ commands later."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_BYTES = 64
_MAX_DOMAIN = 255


def sign_bytes(key: Ed25519PrivateKey, domain: bytes, message: bytes) -> bytes:
    """Sign ``message`` for one purpose only, named by ``domain`` (e.g. ``b"mck/voucher/v1"``).

    What is signed is the domain's length, the domain, then the message, so a signature made
    for a voucher can never be replayed as, say, a signed command whose bytes happen to match.

    Raises:
        ValueError: ``domain`` is empty or longer than 255 bytes (a programming error).
    """
    return key.sign(_framed(domain, message))


def verify_bytes(
    public_key: Ed25519PublicKey, domain: bytes, message: bytes, signature: bytes
) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``message`` under ``domain``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, _framed(domain, message))
    except InvalidSignature:
        return False
    return True


def _framed(domain: bytes, message: bytes) -> bytes:
    if not 0 < len(domain) <= _MAX_DOMAIN:
        raise ValueError(f"a signing domain is 1 to {_MAX_DOMAIN} bytes, got {len(domain)}")
    return bytes([len(domain)]) + domain + message
