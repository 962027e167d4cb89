"""What travels between a device and HQ's enrolment desk: the pairing QR and the bundle.

A pairing slip's QR code is ``MCKPAIR1:<serial>:<code>:<base64url CSR (DER)>``.

An enrolment bundle is JSON ``{"payload": <base64 JSON>, "signature": <base64>}``; the
payload is signed with HQ's Ed25519 enrolment key under the domain ``mck/enrol/v1``. The same
bundle fits in one QR code as ``MCKENROL1:<base64url of the zlib-compressed bundle>``.

Both sides use these definitions: the device (``edge.provisioning``) and HQ (``hq.enrol``).
Nothing here touches files, the database or the configuration.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.domain.errors import IntegrityError, InvalidInput
from edge.security.signing import sign_bytes, verify_bytes

ENROL_DOMAIN = b"mck/enrol/v1"
QR_PREFIX = "MCKENROL1:"
PAIR_PREFIX = "MCKPAIR1"
FORMAT = 1
MAX_QR_TEXT = 2900  # bytes one QR code (version 40, level L, byte mode) holds, with margin


@dataclass(frozen=True)
class Enrolment:
    """What HQ assigns to a device."""

    store_id: str
    device_id: str
    broker_host: str
    broker_port: int
    ca_cert_pem: str
    device_cert_pem: str
    card_range_start: int
    card_range_end: int
    rules_version: str
    catalogue_version: str
    pairing_code: str
    hq_command_public_key_pem: str
    hq_update_public_key_pem: str
    issued_at: str
    replaces_device: str = ""  # the broken device whose identity this one takes (revoked)


@dataclass(frozen=True)
class PairingQr:
    """A pairing slip's QR code, as HQ reads it."""

    serial: str
    code: str
    csr_der: bytes


def pairing_qr_text(serial: str, code: str, csr_der: bytes) -> str:
    csr = base64.urlsafe_b64encode(csr_der).decode().rstrip("=")
    return f"{PAIR_PREFIX}:{serial}:{code}:{csr}"


def parse_pairing_qr(text: str) -> PairingQr:
    """Serial, code and CSR (DER) from a slip's QR text.

    Raises:
        InvalidInput: ``pairing_qr_invalid``: not a pairing code, or a damaged one.
    """
    parts = text.strip().split(":", 3)
    if len(parts) != 4 or parts[0] != PAIR_PREFIX:
        raise InvalidInput(
            "not a member-kiosk pairing code (expected MCKPAIR1:serial:code:request)",
            code="pairing_qr_invalid",
        )
    _, serial, code, csr = parts
    if not serial or not code:
        raise InvalidInput("the pairing code lacks its serial or code", code="pairing_qr_invalid")
    try:
        der = base64.urlsafe_b64decode(csr + "=" * (-len(csr) % 4))
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput(
            f"the pairing code's certificate request is damaged: {exc}", code="pairing_qr_invalid"
        ) from None
    if not der:
        raise InvalidInput(
            "the pairing code carries no certificate request", code="pairing_qr_invalid"
        )
    return PairingQr(serial, code.strip().upper(), der)


def issue_bundle(enrolment: Enrolment, hq_key: Ed25519PrivateKey) -> bytes:
    """HQ's side: the signed bundle file's bytes."""
    payload = json.dumps({"format": FORMAT, **asdict(enrolment)}, sort_keys=True).encode()
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(sign_bytes(hq_key, ENROL_DOMAIN, payload)).decode(),
    }
    return json.dumps(envelope).encode()


def bundle_to_qr(bundle: bytes) -> str:
    return QR_PREFIX + base64.urlsafe_b64encode(zlib.compress(bundle, 9)).decode().rstrip("=")


def bundle_from_qr(text: str) -> bytes:
    """The bundle a QR code's text carries.

    Raises:
        InvalidInput: ``bundle_invalid``: not an enrolment QR code, or a damaged one.
    """
    text = text.strip()
    if not text.startswith(QR_PREFIX):
        raise InvalidInput("not an enrolment QR code", code="bundle_invalid")
    body = text[len(QR_PREFIX) :]
    try:
        return zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error, zlib.error) as exc:
        raise InvalidInput(f"enrolment QR code is damaged: {exc}", code="bundle_invalid") from None


def verify_enrolment(bundle: bytes, hq_public_key: Ed25519PublicKey) -> Enrolment:
    """The enrolment inside ``bundle`` if HQ signed it.

    Raises:
        IntegrityError: ``bundle_signature`` (not HQ's) or ``bundle_invalid`` (malformed).
    """
    try:
        envelope = json.loads(bundle)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"not an enrolment bundle: {exc}", code="bundle_invalid") from None
    if not verify_bytes(hq_public_key, ENROL_DOMAIN, payload, signature):
        raise IntegrityError(
            "enrolment bundle is not signed by HQ's enrolment key", code="bundle_signature"
        )
    try:
        raw = json.loads(payload)
        if raw.pop("format") != FORMAT:
            raise ValueError("unknown format")
        return Enrolment(**raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"enrolment payload unusable: {exc}", code="bundle_invalid") from None
