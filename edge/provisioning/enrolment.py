"""Enrolment bundles from HQ, and applying one to the data directory.

A bundle is JSON ``{"payload": <base64 JSON>, "signature": <base64>}``; the payload is signed
with HQ's Ed25519 enrolment key under the domain ``mck/enrol/v1``. The device trusts the
public half baked into its image (``/etc/member-kiosk/hq-enrol.pub``). The same bundle fits
in a QR code as ``MCKENROL1:<base64url of the zlib-compressed bundle>``.

Applying a bundle writes the CA and the device certificate (``tls/``), HQ's command and
update keys (``keys/``), and the ``[device]`` and ``[sync]`` sections of ``config.toml``;
every other setting in the file is kept. Each application is appended to a hash-chained
audit log, ``provisioning/audit.jsonl``; moving a provisioned device to another identity
needs ``reprovision=True`` and keeps the retired identity's files.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tomllib
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from edge.config import KioskConfig, parse_config
from edge.domain.errors import IntegrityError, InvalidInput, Refusal
from edge.provisioning.identity import ensure_device_key, public_key_der
from edge.provisioning.pairing import consume_pairing
from edge.provisioning.toml_write import dumps_toml
from edge.security.chain import GENESIS, chain_hash
from edge.security.signing import sign_bytes, verify_bytes

ENROL_DOMAIN = b"mck/enrol/v1"
QR_PREFIX = "MCKENROL1:"
AUDIT_FILE = Path("provisioning/audit.jsonl")
RETIRED_DIR = Path("provisioning/retired")
IMAGE_ENROL_KEY = Path("/etc/member-kiosk/hq-enrol.pub")
FORMAT = 1


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
    text = text.strip()
    if not text.startswith(QR_PREFIX):
        raise InvalidInput("not an enrolment QR code", code="bundle_invalid")
    body = text[len(QR_PREFIX) :]
    try:
        return zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, zlib.error) as exc:
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


@dataclass(frozen=True)
class AppliedEnrolment:
    store_id: str
    device_id: str
    previous_device_id: str | None
    config_path: Path
    certificate_expires: str
    retired_to: Path | None


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _check_certificate(enrolment: Enrolment, data_dir: Path) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(enrolment.device_cert_pem.encode())
        ca = x509.load_pem_x509_certificate(enrolment.ca_cert_pem.encode())
        for pem in (enrolment.hq_command_public_key_pem, enrolment.hq_update_public_key_pem):
            if not isinstance(serialization.load_pem_public_key(pem.encode()), Ed25519PublicKey):
                raise ValueError("HQ's keys must be Ed25519")
    except ValueError as exc:
        raise IntegrityError(f"enrolment carries a bad certificate or key: {exc}") from None
    key = ensure_device_key(data_dir / "tls" / "device.key")
    if public_key_der(cert.public_key()) != public_key_der(key):  # type: ignore[arg-type]
        raise Refusal(
            "the certificate was issued for another device's key", code="certificate_mismatch"
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != enrolment.device_id:
        raise Refusal("the certificate does not name this device id", code="certificate_mismatch")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"the certificate is not issued by the bundle's CA: {exc}") from None
    return cert


def _audit(data_dir: Path, entry: dict[str, Any]) -> None:
    """Append to the hash-chained provisioning log (each line carries the previous hash)."""
    log = data_dir / AUDIT_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    prev = GENESIS
    if log.exists():
        lines = log.read_text(encoding="utf-8").splitlines()
        if lines:
            prev = json.loads(lines[-1])["hash"]
    record = {**entry, "prev": prev}
    record["hash"] = chain_hash(prev, entry)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_audit(data_dir: Path) -> list[dict[str, Any]]:
    """The provisioning log, checked link by link.

    Raises:
        IntegrityError: a record was altered or removed.
    """
    log = data_dir / AUDIT_FILE
    prev = GENESIS
    records = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        record = json.loads(line)
        entry = {k: v for k, v in record.items() if k not in ("prev", "hash")}
        if record["prev"] != prev or record["hash"] != chain_hash(prev, entry):
            raise IntegrityError("provisioning audit log was altered", code="audit_broken")
        prev = record["hash"]
        records.append(record)
    return records


def is_provisioned(data_dir: Path) -> bool:
    return (data_dir / "tls" / "device.crt").exists() and bool(read_audit(data_dir))


def apply_enrolment(
    data_dir: Path,
    enrolment: Enrolment,
    *,
    actor: str = "technician",
    reprovision: bool = False,
    now: datetime | None = None,
) -> AppliedEnrolment:
    """Make this device the one ``enrolment`` describes.

    Raises:
        Refusal: the pairing code does not match, the certificate is for another key or id,
            or the device is already provisioned and ``reprovision`` was not asked for.
    """
    now = now or datetime.now(UTC)
    config_path = data_dir / "config.toml"
    raw: dict[str, Any] = (
        tomllib.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    )
    previous = raw.get("device", {}).get("device_id") if is_provisioned(data_dir) else None
    if previous is not None and not reprovision:
        raise Refusal(
            f"this device is already provisioned as {previous}; re-provisioning must be asked "
            "for explicitly",
            code="already_provisioned",
        )
    cert = _check_certificate(enrolment, data_dir)
    serial = consume_pairing(data_dir, enrolment.pairing_code, now)
    retired = None
    if previous is not None:
        retired = data_dir / RETIRED_DIR / f"{previous}-{now.strftime('%Y%m%dT%H%M%SZ')}"
        retired.mkdir(parents=True)
        for name in ("config.toml", "tls/device.crt", "tls/ca.crt"):
            if (data_dir / name).exists():
                shutil.copy2(data_dir / name, retired / Path(name).name)
    raw.setdefault("device", {}).update(
        store_id=enrolment.store_id,
        device_id=enrolment.device_id,
        card_range_start=enrolment.card_range_start,
        card_range_end=enrolment.card_range_end,
    )
    raw.setdefault("sync", {}).update(
        enabled=True,
        broker_host=enrolment.broker_host,
        broker_port=enrolment.broker_port,
        tls=True,
        ca_file="tls/ca.crt",
        cert_file="tls/device.crt",
        key_file="tls/device.key",
        command_public_key="keys/hq-command.pub",
    )
    text = dumps_toml(raw)
    checked: KioskConfig = parse_config(text, str(config_path))  # refuse before writing
    _write(data_dir / "tls" / "ca.crt", enrolment.ca_cert_pem.encode())
    _write(data_dir / "tls" / "device.crt", enrolment.device_cert_pem.encode())
    _write(data_dir / "keys" / "hq-command.pub", enrolment.hq_command_public_key_pem.encode())
    _write(data_dir / "keys" / "hq-update.pub", enrolment.hq_update_public_key_pem.encode())
    _write(config_path, text.encode(), 0o640)
    _audit(
        data_dir,
        {
            "at": now.isoformat(),
            "action": "reprovision" if previous is not None else "provision",
            "actor": actor,
            "serial": serial,
            "store_id": checked.device.store_id,
            "device_id": checked.device.device_id,
            "previous_device_id": previous,
            "replaces_device": enrolment.replaces_device,
            "certificate_serial": format(cert.serial_number, "x"),
            "rules_version": enrolment.rules_version,
            "catalogue_version": enrolment.catalogue_version,
        },
    )
    return AppliedEnrolment(
        store_id=enrolment.store_id,
        device_id=enrolment.device_id,
        previous_device_id=previous,
        config_path=config_path,
        certificate_expires=cert.not_valid_after_utc.isoformat(),
        retired_to=retired,
    )
