"""Enrolment bundles from HQ, and applying one to the data directory.

The bundle's format (signed with HQ's Ed25519 enrolment key, also carried by a QR code) is
defined in :mod:`edge.provisioning.bundle`. The device trusts the public half baked into its
image (``/etc/member-kiosk/hq-enrol.pub``).

Applying a bundle writes the CA and the device certificate (``tls/``), HQ's command and update
keys (``keys/``), HQ's contact and member-code public keys when the bundle carries them
(``keys/hq-contact.pub``, ``keys/hq-member-code.pub``), and the ``[device]`` and ``[sync]``
sections of ``config.toml``; every other setting in the file is kept. It also installs the
chain's phone-lookup key, which the bundle carries sealed to this device's key (only this
device opens it), as ``keys/lookup.key`` (0600). Members registered here under another lookup
key (the dev key made on first use, or another chain's) are re-hashed under the chain's key in
the same transaction, from their encrypted phone number, and a ``member.updated`` event carries
each new hash to HQ; members that arrived from other stores (no phone number here, only the
hash their store sent) keep that hash. A ``lookup.key`` given as a systemd credential wins: it
is neither replaced nor re-hashed for, and the record says whether it is the chain's key.

Nothing is written, and the database is not opened, until the whole bundle passes: its
certificates (:mod:`edge.provisioning.certificates`), the pairing code, the sealed lookup key
and the settings; a bundle that does not is refused in one line.

Each application is an audit record in the device's database (``provision.enrol``,
``provision.reenrol``, ``provision.move`` or ``provision.replace``), naming the lookup key by
its fingerprint only; moving a provisioned device to another identity needs
``reprovision=True`` and keeps the retired identity's files.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select

from edge.config import KioskConfig, parse_config
from edge.domain.errors import ConfigError, IntegrityError, Refusal
from edge.files import write_durably
from edge.provisioning import history
from edge.provisioning.bundle import (
    Enrolment,
    lookup_key_id,
    unseal_lookup_key,
    verify_enrolment,
)
from edge.provisioning.certificates import check_certificates
from edge.provisioning.identity import ensure_device_key
from edge.provisioning.pairing import check_pairing, retire_pairing
from edge.provisioning.toml_write import dumps_toml
from edge.security.contact import parse_contact_public_key
from edge.security.keys import (
    HQ_CONTACT_PUBLIC_KEY_FILE,
    HQ_MEMBER_CODE_PUBLIC_KEY_FILE,
    LOOKUP_KEY_FILE,
    KeyStore,
)
from edge.security.personal import PhoneVault
from edge.services.tx import Tx
from edge.storage.models import Member

__all__ = [
    "IMAGE_ENROL_KEY",
    "AppliedEnrolment",
    "apply_enrolment",
    "is_provisioned",
    "read_audit",
    "verify_enrolment",
]

RETIRED_DIR = Path("provisioning/retired")
IMAGE_ENROL_KEY = Path("/etc/member-kiosk/hq-enrol.pub")
DATABASE_FILE = "kiosk.db"  # where the device's database is unless its configuration says
LOOKUP_FROM_BUNDLE = "bundle"
LOOKUP_FROM_CREDENTIAL = "credential"

_CHUNK = 500  # hashes per IN (...) query, well under SQLite's limit on parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedEnrolment:
    store_id: str
    device_id: str
    previous_device_id: str | None
    config_path: Path
    certificate_expires: str
    retired_to: Path | None
    action: str = history.ENROL
    lookup_key_id: str = ""  # fingerprint of the chain's lookup key (never the key)
    lookup_key_source: str = LOOKUP_FROM_BUNDLE  # or "credential": a systemd credential wins
    members_rehashed: int = 0


@dataclass(frozen=True)
class _Rehash:
    members: int = 0
    replica_hashes_kept: int = 0
    replica_hashes_cleared: int = 0


def _previous_identity(
    data_dir: Path, raw: dict[str, Any], database: Path | None, reprovision: bool
) -> tuple[str | None, str | None]:
    """The device and store id this device has if it is enrolled (else None, None).

    Raises:
        Refusal: ``already_provisioned``: it is enrolled and ``reprovision`` was not asked for.
    """
    if not is_provisioned(data_dir, database):
        return None, None
    device = raw.get("device", {})
    previous, previous_store = device.get("device_id"), device.get("store_id")
    if previous is not None and not reprovision:
        raise Refusal(
            f"this device is already provisioned as {previous}; re-provisioning must be asked "
            "for explicitly",
            code="already_provisioned",
        )
    return previous, previous_store


def _device_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The key pair the pairing slip was made with (never made here: that would write)."""
    path = data_dir / "tls" / "device.key"
    if not path.exists():
        raise Refusal(
            "this device has no key pair yet: print a pairing slip first and take it to HQ",
            code="not_pairing",
        )
    return ensure_device_key(path)


def _merged_config(raw: dict[str, Any], enrolment: Enrolment) -> dict[str, Any]:
    """The configuration with the bundle's ``[device]`` and ``[sync]`` settings (a copy)."""
    merged = {**raw, "device": dict(raw.get("device", {})), "sync": dict(raw.get("sync", {}))}
    merged["device"].update(
        store_id=enrolment.store_id,
        device_id=enrolment.device_id,
        card_range_start=enrolment.card_range_start,
        card_range_end=enrolment.card_range_end,
    )
    merged["sync"].update(
        enabled=True,
        broker_host=enrolment.broker_host,
        broker_port=enrolment.broker_port,
        tls=True,
        ca_file="tls/ca.crt",
        cert_file="tls/device.crt",
        key_file="tls/device.key",
        command_public_key="keys/hq-command.pub",
    )
    return merged


def _check_public_keys(enrolment: Enrolment) -> None:
    """HQ's contact and member-code keys, when the bundle carries them, must be what they say.

    Raises:
        IntegrityError: ``bundle_invalid``.
    """
    try:
        if enrolment.hq_contact_public_key_pem:
            parse_contact_public_key(
                enrolment.hq_contact_public_key_pem.encode(), "the bundle's contact key"
            )
        if enrolment.hq_member_code_public_key_pem:
            key = serialization.load_pem_public_key(
                enrolment.hq_member_code_public_key_pem.encode()
            )
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
    except ConfigError as exc:
        raise IntegrityError(
            f"{exc.message}: ask HQ for a new bundle", code="bundle_invalid"
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IntegrityError(
            f"the bundle's member-code key is unusable ({exc}): ask HQ for a new bundle",
            code="bundle_invalid",
        ) from None


def _checked_config(raw: dict[str, Any], enrolment: Enrolment) -> tuple[str, KioskConfig]:
    """The merged configuration's text, refused if the bundle's settings do not validate
    (the configuration as it is was validated before)."""
    text = dumps_toml(_merged_config(raw, enrolment))
    try:
        return text, parse_config(text, "the bundle's settings")
    except ConfigError as exc:
        raise IntegrityError(
            f"{exc.message}: ask HQ for a new bundle", code="bundle_invalid"
        ) from None


def _rehash_members(tx: Tx, lookup_key: bytes) -> _Rehash:
    """Re-hash every member registered here (phone number decrypted with the data key) under
    ``lookup_key``, emitting ``member.updated`` for each; replicas keep their store's hash,
    except one that collides with a local member's new hash (the local member keeps lookup,
    as when a replica arrives)."""
    session = tx.session
    local = list(session.scalars(select(Member).where(Member.phone_cipher.is_not(None))))
    replica = (Member.phone_cipher.is_(None), Member.phone_hash.is_not(None))
    replicas = session.scalar(select(func.count()).select_from(Member).where(*replica)) or 0
    if not local:
        return _Rehash(replica_hashes_kept=replicas)
    vault = PhoneVault(tx.app.keys.data_key, lookup_key)
    new_hashes: dict[str, str] = {}
    for member in local:
        assert member.phone_cipher is not None
        try:
            new_hashes[member.id] = vault.lookup_hash(vault.decrypt(member.phone_cipher))
        except IntegrityError as exc:
            raise IntegrityError(
                f"member {member.id}'s phone number cannot be read to re-hash it: {exc.message}",
                code=exc.code,
                member_id=member.id,
            ) from None
    taken = sorted(set(new_hashes.values()))
    cleared = 0
    for start in range(0, len(taken), _CHUNK):  # only the replicas that clash are loaded
        chunk = taken[start : start + _CHUNK]
        for clash in session.scalars(
            select(Member).where(Member.phone_cipher.is_(None), Member.phone_hash.in_(chunk))
        ):
            log.warning("phone of member %s is registered to a member here too", clash.id)
            clash.phone_hash = None
            cleared += 1
    for member in local:  # two steps: no transient clash on the unique index
        member.phone_hash = None
    session.flush()
    for member in local:
        member.phone_hash = new_hashes[member.id]
        member.updated_at = tx.now
        tx.emit(
            "member.updated",
            {
                "member_id": member.id,
                "phone_hash": member.phone_hash,
                "phone_masked": member.phone_masked,
            },
        )
    session.flush()
    return _Rehash(len(local), replicas - cleared, cleared)


def read_audit(data_dir: Path, config_path: Path | None = None) -> list[dict[str, Any]]:
    """This device's provisioning history from its audit chain, checked link by link.

    Raises:
        IntegrityError: an audit record was altered or removed.
    """
    return history.read_provisioning_history(data_dir, config_path)


def is_provisioned(data_dir: Path, database: Path | None = None) -> bool:
    """Whether this device was enrolled: it has its certificate and its audit log records an
    applied enrolment (or it was enrolled when the history was ``provisioning/audit.jsonl``).

    Cheap enough for every kiosk start: one read-only query on ``database`` (default:
    ``kiosk.db`` in ``data_dir``), no schema check, no walk of the audit chain (``kiosk
    provision audit`` checks that).
    """
    if not (data_dir / "tls" / "device.crt").exists():
        return False
    if history.enrolled_before(data_dir):
        return True
    return history.has_applied_enrolment(database or data_dir / DATABASE_FILE)


def apply_enrolment(
    data_dir: Path,
    enrolment: Enrolment,
    *,
    actor: str = "technician",
    reprovision: bool = False,
    now: datetime | None = None,
    config_path: Path | None = None,
) -> AppliedEnrolment:
    """Make this device the one ``enrolment`` describes.

    The bundle is checked whole before the database is opened or anything is written: its
    certificates (:func:`edge.provisioning.certificates.check_certificates`: the chain's CA,
    the signature, this device's key and id, the dates on this device's clock with the member
    codes' skew allowance), the pairing code, the sealed lookup key and the settings. The files
    are written inside the transaction that records the enrolment in the audit chain. If that
    transaction does not commit, the lookup key file is put back as it was.

    Raises:
        Refusal: the device has no key pair or pairing, the pairing code does not match, a
            certificate is refused (see ``check_certificates``), or the device is already
            provisioned and ``reprovision`` was not asked for.
        IntegrityError: ``bundle_invalid`` (an unreadable certificate or key, settings the
            configuration refuses) or ``lookup_key_invalid``.
        ConfigError: the device's configuration file is invalid.
    """
    now = now or datetime.now(UTC)
    config_path = config_path or data_dir / "config.toml"
    existing = config_path.read_text(encoding="utf-8") if config_path.exists() else None
    before = parse_config(existing, str(config_path)) if existing is not None else KioskConfig()
    raw: dict[str, Any] = tomllib.loads(existing) if existing is not None else {}
    # the bundle is checked whole before the database is opened or anything is written
    device_key = _device_key(data_dir)
    cert = check_certificates(enrolment, device_key, now, before.security.member_code_skew_s)
    serial = check_pairing(data_dir, enrolment.pairing_code, now)
    lookup_key = unseal_lookup_key(
        enrolment.lookup_key_sealed, device_key, enrolment.device_id, serial
    )
    text, checked = _checked_config(raw, enrolment)
    _check_public_keys(enrolment)
    keys: KeyStore | None = None  # set once the chain's key is installed: undone on failure
    current: bytes | None = None
    try:
        with history.record_provisioning(data_dir, config_path) as tx:
            opened = tx.app.db.engine.url.database
            previous, previous_store = _previous_identity(
                data_dir, raw, Path(opened) if opened else None, reprovision
            )
            if enrolment.replaces_device:
                action = history.REPLACE
            elif previous is None:
                action = history.ENROL
            elif previous_store != enrolment.store_id:
                action = history.MOVE
            else:
                action = history.REENROL
            current = tx.app.keys.existing_secret(LOOKUP_KEY_FILE)
            from_credential = tx.app.keys.credential_path(LOOKUP_KEY_FILE) is not None
            source = LOOKUP_FROM_CREDENTIAL if from_credential else LOOKUP_FROM_BUNDLE
            key_id = lookup_key_id(lookup_key)
            changes_key = not from_credential and (
                current is None or not hmac.compare_digest(current, lookup_key)
            )
            rehash = _rehash_members(tx, lookup_key) if changes_key else _Rehash()
            tx.audit(
                actor,
                action,
                checked.device.device_id,
                serial=serial,
                store_id=checked.device.store_id,
                device_id=checked.device.device_id,
                previous_device_id=previous,
                previous_store_id=previous_store,
                replaces_device=enrolment.replaces_device,
                certificate_serial=format(cert.serial_number, "x"),
                card_range_start=checked.device.card_range_start,
                card_range_end=checked.device.card_range_end,
                rules_version=enrolment.rules_version,
                catalogue_version=enrolment.catalogue_version,
                issued_at=enrolment.issued_at,
                lookup_key_id=key_id,
                lookup_key_source=source,
                lookup_key_in_use=lookup_key_id(current) if from_credential and current else "",
                previous_lookup_key_id=lookup_key_id(current) if changes_key and current else "",
                members_rehashed=rehash.members,
                replica_phone_hashes_kept=rehash.replica_hashes_kept,
                replica_phone_hashes_cleared=rehash.replica_hashes_cleared,
            )
            retired = None
            if previous is not None:
                retired = data_dir / RETIRED_DIR / f"{previous}-{now.strftime('%Y%m%dT%H%M%SZ')}"
                retired.mkdir(parents=True)
                for name in (config_path.name, "tls/device.crt", "tls/ca.crt"):
                    source_file = config_path if name == config_path.name else data_dir / name
                    if source_file.exists():
                        shutil.copy2(source_file, retired / Path(name).name)
            write_durably(data_dir / "tls" / "ca.crt", enrolment.ca_cert_pem.encode())
            write_durably(data_dir / "tls" / "device.crt", enrolment.device_cert_pem.encode())
            write_durably(
                data_dir / "keys" / "hq-command.pub", enrolment.hq_command_public_key_pem.encode()
            )
            write_durably(
                data_dir / "keys" / "hq-update.pub", enrolment.hq_update_public_key_pem.encode()
            )
            installed = tx.app.keys.keys_dir
            for name, pem in (
                (HQ_CONTACT_PUBLIC_KEY_FILE, enrolment.hq_contact_public_key_pem),
                (HQ_MEMBER_CODE_PUBLIC_KEY_FILE, enrolment.hq_member_code_public_key_pem),
            ):
                if pem:  # a bundle without one keeps the key a former bundle installed
                    write_durably(installed / name, pem.encode())
            write_durably(config_path, text.encode(), 0o640)
            retire_pairing(data_dir)  # the one-time code is used up
            if changes_key:  # last: the re-hashed members and the key commit together
                tx.app.keys.install_secret(LOOKUP_KEY_FILE, lookup_key)
                keys = tx.app.keys
    except BaseException:
        if keys is not None:  # the transaction did not commit: the old key stays
            keys.restore_secret(LOOKUP_KEY_FILE, current)
        raise
    return AppliedEnrolment(
        store_id=enrolment.store_id,
        device_id=enrolment.device_id,
        previous_device_id=previous,
        config_path=config_path,
        certificate_expires=cert.not_valid_after_utc.isoformat(),
        retired_to=retired,
        action=action,
        lookup_key_id=key_id,
        lookup_key_source=source,
        members_rehashed=rehash.members,
    )
