"""Checking the certificates an enrolment bundle brings, before anything is written.

HQ signs the bundle, but what it carries must still make a working, trustworthy identity: the
chain's CA certificate must be a CA, the device certificate must be signed by that CA, be for
this device's key and id, be meant for a client's TLS login, and be valid now. Each problem is
refused with one line saying what is wrong and what to do.

"Now" is the device's clock, which may be off from HQ's by the allowance the member codes
use (``security.member_code_skew_s``, 90 s by default): a certificate is taken from that long
before its start to that long after its end.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.domain.errors import IntegrityError, Refusal
from edge.provisioning.bundle import Enrolment
from edge.provisioning.identity import public_key_der

__all__ = ["check_certificates"]

NEW_BUNDLE = "ask HQ for a new bundle"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if cns else cert.subject.rfc4514_string()
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return repr(text)


def _load(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise IntegrityError(
            f"the bundle's {what} is not a readable certificate: {NEW_BUNDLE}",
            code="bundle_invalid",
        ) from None


def _check_hq_keys(enrolment: Enrolment) -> None:
    for what, pem in (
        ("command key", enrolment.hq_command_public_key_pem),
        ("update key", enrolment.hq_update_public_key_pem),
    ):
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise IntegrityError(
                f"the bundle's HQ {what} is not an Ed25519 public key: {NEW_BUNDLE}",
                code="bundle_invalid",
            )


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # duplicated or unparsable extensions
        raise Refusal(
            f"the certificate {_name(cert)} has damaged extensions: {NEW_BUNDLE}",
            code="certificate_invalid",
        ) from None


def _check_ca(ca: x509.Certificate) -> None:
    constraints = _extension(ca, x509.BasicConstraints)
    usage = _extension(ca, x509.KeyUsage)
    is_ca = isinstance(constraints, x509.BasicConstraints) and constraints.ca
    signs = usage is None or (isinstance(usage, x509.KeyUsage) and usage.key_cert_sign)
    if not is_ca or not signs:
        raise Refusal(
            f"the bundle's CA certificate {_name(ca)} is not a CA certificate (it may not sign "
            f"certificates): {NEW_BUNDLE}",
            code="ca_invalid",
        )


def _check_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise Refusal(
            f"the device certificate is not signed by the chain's CA in the bundle "
            f"({_name(ca)}): {NEW_BUNDLE}",
            code="certificate_untrusted",
        ) from None


def _check_usage(cert: x509.Certificate) -> None:
    constraints = _extension(cert, x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise Refusal(
            f"the device certificate is a CA certificate, not a device's: {NEW_BUNDLE}",
            code="certificate_usage",
        )
    extended = _extension(cert, x509.ExtendedKeyUsage)
    usage = _extension(cert, x509.KeyUsage)
    client = not isinstance(extended, x509.ExtendedKeyUsage) or (
        ExtendedKeyUsageOID.CLIENT_AUTH in extended
    )
    signs = not isinstance(usage, x509.KeyUsage) or usage.digital_signature
    if not client or not signs:
        raise Refusal(
            "the device certificate is not for a client's TLS login (its key usage does not "
            f"allow it): {NEW_BUNDLE}",
            code="certificate_usage",
        )


def _check_window(cert: x509.Certificate, what: str, now: datetime, skew: timedelta) -> None:
    clock = f"this device's clock says {_when(now)}"
    starts, ends = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now + skew < starts:
        raise Refusal(
            f"{what} is not valid before {_when(starts)} ({clock}): check the device's "
            f"clock (timedatectl); if it is right, {NEW_BUNDLE}",
            code="certificate_not_yet_valid",
            not_valid_before=starts.isoformat(),
        )
    if now - skew > ends:
        raise Refusal(
            f"{what} expired on {_when(ends)} ({clock}): {NEW_BUNDLE}",
            code="certificate_expired",
            not_valid_after=ends.isoformat(),
        )


def check_certificates(
    enrolment: Enrolment,
    device_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    skew_s: int,
) -> x509.Certificate:
    """The bundle's device certificate, once it and the chain's CA certificate pass.

    Nothing is read or written but the arguments.

    Raises:
        IntegrityError: ``bundle_invalid``: a certificate or HQ key in the bundle is unreadable.
        Refusal: ``ca_invalid`` (the CA certificate is no CA), ``certificate_untrusted`` (not
            signed by the bundle's CA), ``certificate_mismatch`` (for another key or id),
            ``certificate_usage`` (not a client certificate), ``certificate_not_yet_valid``
            or ``certificate_expired`` (outside its validity, with ``skew_s`` allowed either
            way), ``certificate_invalid`` (damaged extensions).
    """
    ca = _load(enrolment.ca_cert_pem, "CA certificate")
    cert = _load(enrolment.device_cert_pem, "device certificate")
    _check_hq_keys(enrolment)
    _check_ca(ca)
    _check_signed_by(cert, ca)
    try:
        issued_for = public_key_der(cert.public_key())  # type: ignore[arg-type]
    except (ValueError, UnsupportedAlgorithm):
        issued_for = b""
    if public_key_der(device_key) != issued_for:
        raise Refusal(
            "the certificate was issued for another device's key (the bundle is for another "
            "device or an older pairing slip): print a new slip and ask HQ for a new bundle",
            code="certificate_mismatch",
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != enrolment.device_id:
        raise Refusal(
            f"the certificate does not name this device id {enrolment.device_id}: {NEW_BUNDLE}",
            code="certificate_mismatch",
        )
    _check_usage(cert)
    skew = timedelta(seconds=skew_s)
    _check_window(ca, "the chain's CA certificate in the bundle", now, skew)
    _check_window(cert, "the device certificate", now, skew)
    return cert
