"""What travels between a device and HQ's enrolment desk: the pairing QR and the bundle.

A pairing slip's QR code is ``MCKPAIR1:<serial>:<code>:<base64url CSR (DER)>``.

An enrolment bundle is JSON ``{"payload": <base64 JSON>, "signature": <base64>}``; the
payload is signed with HQ's Ed25519 enrolment key under the domain ``mck/enrol/v1``. The same
bundle fits in one QR code as ``MCKENROL1:<base64url of the zlib-compressed bundle>``, or, when
that is too long for one code (a bundle carrying HQ's contact and member-code keys), as
``MCKENROL2:<base64url of the zlib-compressed signature (64 bytes) and payload>``: the same
bytes without the envelope's base64, which compresses poorly. A device rebuilds the same
bundle from either.

Format 2 carries the chain's phone-lookup key (``lookup_key_sealed``), sealed
(:mod:`edge.security.sealing`) to the public key of the device's certificate request and bound
to its device id and serial: the bundle travels as a file or a QR code and holds no secret in
the clear. Format 1 bundles (without it) are refused. HQ's contact and member-code public keys
(``hq_contact_public_key_pem``, ``hq_member_code_public_key_pem``) are optional fields of
format 2: empty when HQ has none, absent from a bundle of an older desk.

Both sides use these definitions: the device (``edge.provisioning``) and HQ (``hq.enrol``).
Nothing here touches files, the database or the configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.domain.errors import IntegrityError, InvalidInput
from edge.security.keys import SECRET_BYTES
from edge.security.sealing import seal, unseal
from edge.security.signing import sign_bytes, verify_bytes

ENROL_DOMAIN = b"mck/enrol/v1"
QR_PREFIX = "MCKENROL1:"
COMPACT_QR_PREFIX = "MCKENROL2:"
_SIGNATURE_BYTES = 64  # Ed25519
PAIR_PREFIX = "MCKPAIR1"
FORMAT = 2
LOOKUP_KEY_PURPOSE = b"mck/lookup-key/v1"
LOOKUP_KEY_BYTES = SECRET_BYTES  # the key is installed as the device's keys/lookup.key
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
    lookup_key_sealed: str = ""  # base64: the chain's lookup key, sealed to this device's key
    # HQ's contact key (EC P-256, PEM): seals the phones of members who agree to messages
    hq_contact_public_key_pem: str = ""
    # HQ's member-code key (Ed25519, PEM): verifies the members' signed codes
    hq_member_code_public_key_pem: str = ""


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


def code_digest(code: str) -> str:
    """A pairing code's SHA-256 (hex), as both sides keep it (never the code itself)."""
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def lookup_key_id(key: bytes) -> str:
    """A short fingerprint naming a lookup key in records (it reveals nothing of the key)."""
    return hmac.new(key, b"mck/lookup-key-id", hashlib.sha256).hexdigest()[:16]


def seal_lookup_key(
    key: bytes, device_public_key: ec.EllipticCurvePublicKey, device_id: str, serial: str
) -> str:
    """HQ's side: the chain's lookup key sealed to the device's key, id and serial (base64)."""
    if len(key) != LOOKUP_KEY_BYTES:
        raise InvalidInput(
            f"the lookup key must be {LOOKUP_KEY_BYTES} bytes", code="lookup_key_invalid"
        )
    blob = seal(device_public_key, key, purpose=LOOKUP_KEY_PURPOSE, context=(device_id, serial))
    return base64.b64encode(blob).decode()


def unseal_lookup_key(
    sealed: str, device_key: ec.EllipticCurvePrivateKey, device_id: str, serial: str
) -> bytes:
    """The device's side: the chain's lookup key from the bundle.

    Raises:
        IntegrityError: ``lookup_key_invalid``: missing, garbled, or sealed for another
            device's key, id or serial.
    """
    try:
        blob = base64.b64decode(sealed, validate=True)
    except (ValueError, binascii.Error):
        blob = b""
    if not blob:
        raise IntegrityError(
            "the bundle's sealed lookup key is missing or garbled", code="lookup_key_invalid"
        )
    try:
        key = unseal(device_key, blob, purpose=LOOKUP_KEY_PURPOSE, context=(device_id, serial))
    except IntegrityError as exc:
        raise IntegrityError(
            f"the bundle's lookup key cannot be opened by this device: {exc.message}",
            code="lookup_key_invalid",
        ) from None
    if len(key) != LOOKUP_KEY_BYTES:
        raise IntegrityError(
            f"the bundle's lookup key is not {LOOKUP_KEY_BYTES} bytes", code="lookup_key_invalid"
        )
    return key


def issue_bundle(enrolment: Enrolment, hq_key: Ed25519PrivateKey) -> bytes:
    """HQ's side: the signed bundle file's bytes."""
    payload = json.dumps({"format": FORMAT, **asdict(enrolment)}, sort_keys=True).encode()
    return _envelope(payload, sign_bytes(hq_key, ENROL_DOMAIN, payload))


def _envelope(payload: bytes, signature: bytes) -> bytes:
    return json.dumps(
        {
            "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
    ).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(data, 9)).decode().rstrip("=")


def bundle_to_qr(bundle: bytes) -> str:
    """A QR code's text for the bundle: ``MCKENROL1`` (every device reads it) when it fits
    one code, else the shorter ``MCKENROL2``."""
    text = QR_PREFIX + _b64url(bundle)
    if len(text) <= MAX_QR_TEXT:
        return text
    try:
        envelope = json.loads(bundle)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not an enrolment bundle: {exc}", code="bundle_invalid") from None
    if len(signature) != _SIGNATURE_BYTES or _envelope(payload, signature) != bundle:
        return text  # not as issue_bundle makes them: only the first form carries it whole
    return COMPACT_QR_PREFIX + _b64url(signature + payload)


def looks_like_bundle_qr(text: str) -> bool:
    """Whether a scanned code's text is an enrolment bundle (either form)."""
    return text.startswith((QR_PREFIX, COMPACT_QR_PREFIX))


def bundle_from_qr(text: str) -> bytes:
    """The bundle a QR code's text carries.

    Raises:
        InvalidInput: ``bundle_invalid``: not an enrolment QR code, or a damaged one.
    """
    text = text.strip()
    if not looks_like_bundle_qr(text):
        raise InvalidInput("not an enrolment QR code", code="bundle_invalid")
    compact = text.startswith(COMPACT_QR_PREFIX)
    body = text[len(COMPACT_QR_PREFIX if compact else QR_PREFIX) :]
    try:
        data = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error, zlib.error) as exc:
        raise InvalidInput(f"enrolment QR code is damaged: {exc}", code="bundle_invalid") from None
    if not compact:
        return data
    if len(data) <= _SIGNATURE_BYTES:
        raise InvalidInput("enrolment QR code is truncated", code="bundle_invalid")
    return _envelope(data[_SIGNATURE_BYTES:], data[:_SIGNATURE_BYTES])


_FIELD_TYPES = {"str": (str, "a string"), "int": (int, "an integer")}


def _enrolment_from(raw: object) -> Enrolment:
    """The payload's fields as an :class:`Enrolment`, each of the type the format gives it.

    Raises:
        ValueError: a field is missing, unknown, or of another type (the message says which).
    """
    if not isinstance(raw, dict):
        raise ValueError("it is not a JSON object")
    version = raw.get("format")
    if version != FORMAT or isinstance(version, bool):
        raise ValueError(f"format {version!r} is not {FORMAT} (a bundle from an older desk?)")
    known = {f.name: f for f in fields(Enrolment)}
    unknown = sorted(set(raw) - set(known) - {"format"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, field in known.items():
        if name not in raw:
            if field.default is MISSING:
                raise ValueError(f"it lacks {name}")
            continue
        kind, spelled = _FIELD_TYPES[str(field.type)]
        value = raw[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name} is not {spelled} but {type(value).__name__}")
        values[name] = value
    enrolment = Enrolment(**values)
    if not enrolment.lookup_key_sealed:
        raise ValueError("it carries no lookup key")
    return enrolment


def verify_enrolment(bundle: bytes, hq_public_key: Ed25519PublicKey) -> Enrolment:
    """The enrolment inside ``bundle`` if HQ signed it and every field has its type.

    Raises:
        IntegrityError: ``bundle_signature`` (not HQ's) or ``bundle_invalid`` (damaged,
            truncated or malformed); the message is one line saying what to do.
    """
    try:
        envelope = json.loads(bundle)
        if not isinstance(envelope, dict):
            raise TypeError("it is not a JSON object")
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        reason = f"no {exc}" if isinstance(exc, KeyError) else _one_line(exc)
        raise IntegrityError(
            f"not an enrolment bundle, or a damaged or truncated one ({reason}): copy the "
            "bundle file from HQ again",
            code="bundle_invalid",
        ) from None
    if not verify_bytes(hq_public_key, ENROL_DOMAIN, payload, signature):
        raise IntegrityError(
            "enrolment bundle is not signed by HQ's enrolment key", code="bundle_signature"
        )
    try:
        return _enrolment_from(json.loads(payload))
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(
            f"enrolment payload unusable: {_one_line(exc)}: ask HQ for a new bundle",
            code="bundle_invalid",
        ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
