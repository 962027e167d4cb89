"""The device's TLS identity: a key pair made on the device and a certificate request for HQ.

The private key is written once (0600) and never leaves the device; HQ's CA answers the
request with a certificate whose common name is the device id HQ assigned.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERIAL_SOURCES = (Path("/proc/device-tree/serial-number"), Path("/etc/machine-id"))


def device_serial(sources: tuple[Path, ...] = SERIAL_SOURCES) -> str:
    """The board's serial number (Raspberry Pi device tree), else the machine id."""
    for source in sources:
        try:
            text = source.read_bytes().strip(b"\0\n ").decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text.lower()
    raise OSError("no device serial: neither the device tree nor /etc/machine-id is readable")


def ensure_device_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The device's private key at ``path``, made (P-256, file mode 0600) if missing."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def certificate_request(key: ec.EllipticCurvePrivateKey, serial: str) -> bytes:
    """A CSR (DER) naming the board's serial; HQ sets the subject of the certificate itself."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"kiosk-{serial}"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def public_key_der(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
