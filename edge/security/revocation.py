"""Certificate revocation lists for the brokers' ``crlfile``, made one way by HQ and the
development CA alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# A broker whose CRL is past its next update refuses EVERY client (OpenSSL's CRL check), and
# Mosquitto reads the file only at start: a short validity would take a store offline the day
# nobody renewed it. The list is rewritten on every revocation, so it is issued for years.
CRL_VALIDITY = dt.timedelta(days=3650)


def crl_pem(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[tuple[int, dt.datetime]],
    now: dt.datetime,
) -> bytes:
    """A CRL (PEM) signed by the CA listing ``revoked`` (serial number, revocation time)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + CRL_VALIDITY)
    )
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
