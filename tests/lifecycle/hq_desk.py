"""A test HQ's enrolment desk: reads a pairing slip's QR, signs the CSR with the broker's CA,
and issues a signed enrolment bundle, the way HQ's registration does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.provisioning.enrolment import Enrolment, issue_bundle
from edge.provisioning.pairing import parse_pairing_qr
from edge.sync.broker import DevCA


def _pem_pub(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class HqDesk:
    ca_dir: Path
    enrol_key: Ed25519PrivateKey
    command_key: Ed25519PrivateKey
    update_key: Ed25519PrivateKey

    @classmethod
    def create(cls, ca_dir: Path) -> HqDesk:
        return cls(
            ca_dir,
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
        )

    def enrol_public_pem(self) -> bytes:
        return _pem_pub(self.enrol_key).encode()

    def sign_csr(self, csr_der: bytes, device_id: str) -> str:
        ca = DevCA(self.ca_dir)
        csr = x509.load_der_x509_csr(csr_der)
        assert csr.is_signature_valid
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def register(
        self,
        slip_qr: str,
        *,
        store_id: str,
        device_id: str,
        broker_port: int,
        card_range: tuple[int, int] = (100_000, 149_999),
        replaces: str = "",
        signer: Ed25519PrivateKey | None = None,
    ) -> bytes:
        _serial, code, csr = parse_pairing_qr(slip_qr)
        enrolment = Enrolment(
            store_id=store_id,
            device_id=device_id,
            broker_host="127.0.0.1",
            broker_port=broker_port,
            ca_cert_pem=(self.ca_dir / "ca.crt").read_text(),
            device_cert_pem=self.sign_csr(csr, device_id),
            card_range_start=card_range[0],
            card_range_end=card_range[1],
            rules_version="2026.03",
            catalogue_version="2026.03-2",
            pairing_code=code,
            hq_command_public_key_pem=_pem_pub(self.command_key),
            hq_update_public_key_pem=_pem_pub(self.update_key),
            issued_at=dt.datetime.now(dt.UTC).isoformat(),
            replaces_device=replaces,
        )
        return issue_bundle(enrolment, signer or self.enrol_key)
