"""HQ's enrolment desk (``hq.enrol``) set up for a test: a CA directory with HQ's keys and a
SQLite database beside it; and what a desk would never issue (a certificate out of its dates,
from a look-alike CA, a payload of the wrong shape), signed with HQ's enrolment key, to see
the device refuse it."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.provisioning.bundle import ENROL_DOMAIN, FORMAT, Enrolment
from edge.security.keys import load_private_key
from edge.security.signing import sign_bytes
from edge.sync.broker import DevCA, write_command_keys
from hq.enrol import DeskSettings, EnrolmentDesk, write_enrol_key
from tests.hq.database import sqlite_hq_engine


def make_desk(root: Path, ca_dir: Path, **settings: object) -> EnrolmentDesk:
    """HQ's desk on a real SQLite database, signing with the CA in ``ca_dir``."""
    DevCA(ca_dir)
    if not (ca_dir / "hq-command.key").exists():
        write_command_keys(ca_dir)
    if not (ca_dir / "hq-enrol.key").exists():
        write_enrol_key(ca_dir)
    update = ca_dir / "hq-update.pub"
    if not update.exists():
        update.write_bytes(
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    base = DeskSettings(
        ca_dir=ca_dir,
        enrol_key=ca_dir / "hq-enrol.key",
        command_key=ca_dir / "hq-command.key",
        update_key=update,
        broker_host="127.0.0.1",
        broker_port=8883,
        rules_version="2026.03",
        catalogue_version="2026.03-2",
    )
    engine = sqlite_hq_engine(root / "hq.db")
    return EnrolmentDesk(engine, replace(base, **settings))  # type: ignore[arg-type]


# -- what the desk never issues, signed with its enrolment key ---------------------------------


def desk_ca(desk: EnrolmentDesk) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The chain's CA the desk signs device certificates with: certificate and key."""
    ca = DevCA(desk.settings.ca_dir)
    return ca.cert, ca.key


def look_alike_ca(desk: EnrolmentDesk) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate with the chain CA's subject and dates but another key."""
    genuine, _ = desk_ca(desk)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(genuine.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def with_dates(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """``cert`` signed again by ``key`` with other dates (same names, key and extensions)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, hashes.SHA256())


def certificate(
    cn: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: tuple[x509.Certificate | x509.Name, ec.EllipticCurvePrivateKey],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool = False,
    key_usage: x509.KeyUsage | None = None,
    extended: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> x509.Certificate:
    """A certificate for ``public_key`` named ``cn``, signed by ``issuer`` (its certificate
    or just the name it signs under, and its key), as HQ's desk makes them unless told."""
    issuer_cert, issuer_key = issuer
    name = issuer_cert if isinstance(issuer_cert, x509.Name) else issuer_cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def signed_payload(desk: EnrolmentDesk, payload: Any) -> bytes:
    """A bundle file carrying ``payload`` (any JSON), signed with HQ's enrolment key."""
    data = json.dumps(payload).encode()
    signature = sign_bytes(load_private_key(desk.settings.enrol_key), ENROL_DOMAIN, data)
    return json.dumps(
        {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
    ).encode()


def signed_bundle(desk: EnrolmentDesk, enrolment: Enrolment, **changes: Any) -> bytes:
    """``enrolment`` with ``changes`` (of any type, as JSON holds them), signed by HQ."""
    return signed_payload(desk, {"format": FORMAT, **asdict(enrolment), **changes})
