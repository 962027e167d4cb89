"""HQ's contact key: the EC P-256 key pair the kiosks seal members' phone numbers to.

A member who agrees to messages gives HQ a usable phone number: the kiosk seals it to the
public half (``hq-contact.pub`` on the kiosk, from the enrolment bundle), and only HQ opens it
with the private half, ``hq-contact.pem`` in the CA folder beside ``hq-lookup.key``. Made once
for the whole chain (``kiosk hq contact-key --out DIR``) and backed up like the CA key: a kiosk
keeps sealing to the key its bundle gave it, and HQ cannot open what was sealed to a lost key.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.domain.errors import ConfigError, IntegrityError, Refusal
from edge.files import fsync_directory
from edge.security.contact import contact_public_pem, load_contact_private_key, open_phone
from edge.security.keys import load_private_key
from edge.security.personal import PhoneVault

CONTACT_KEY_FILE = "hq-contact.pem"

__all__ = [
    "CONTACT_KEY_FILE",
    "PhoneIntake",
    "bundle_public_keys",
    "load_contact_key",
    "write_contact_key",
]


def write_contact_key(directory: Path) -> Path:
    """A new contact key pair in ``directory/hq-contact.pem`` (PKCS#8, mode 0600); an existing
    one is never overwritten.

    Raises:
        Refusal: ``key_exists``.
        ConfigError: ``key_unwritable``.
    """
    path = directory / CONTACT_KEY_FILE
    if path.exists():
        raise Refusal(f"{path} already exists", code="key_exists")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Refusal(f"{path} already exists", code="key_exists") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror or exc}", code="key_unwritable", path=str(path)
        ) from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(directory)
    return path


def load_contact_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    """HQ's contact private key from ``path``, None when there is no such file.

    Raises:
        ConfigError: the file is there but unreadable, readable by others, or not a P-256 key.
    """
    if not path.exists():
        return None
    return load_contact_private_key(path)


def bundle_public_keys(contact_path: Path, code_path: Path) -> tuple[str, str]:
    """The PEMs of HQ's contact and member-code public keys for an enrolment bundle, from
    their private keys' files; each "" when its file is not there.

    Raises:
        ConfigError: a key file is there but unusable.
    """
    contact = load_contact_key(contact_path)
    member_code = ""
    if code_path.exists():
        member_code = (
            load_private_key(code_path)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
    return (contact_public_pem(contact) if contact is not None else ""), member_code


class PhoneIntake:
    """What HQ needs to take a phone number a kiosk sealed for it: the contact private key
    to open it, the chain's lookup key to check it is the member's number, and HQ's data key
    to keep it (``hq_member.phone_enc``).

    Example::

        intake = PhoneIntake(load_contact_key(ca_dir / CONTACT_KEY_FILE), vault)
        member.phone_enc = intake.take(event_data.phone_sealed, member.id, member.phone_hash)
    """

    def __init__(self, contact_key: ec.EllipticCurvePrivateKey | None, vault: PhoneVault | None):
        """``vault``: HQ's data key with the chain's lookup key; None when HQ has no lookup key
        (then no sealed number can be checked, so none is taken)."""
        self._key = contact_key
        self._vault = vault

    @property
    def ready(self) -> bool:
        """Whether sealed numbers can be opened and checked here."""
        return self._key is not None and self._vault is not None

    def holds(self, phone_enc: bytes, phone_hash: str | None) -> bool:
        """Whether ``phone_enc`` (kept under HQ's data key) is still the number ``phone_hash``
        names: False when it is not, or cannot be told here."""
        if self._vault is None or phone_hash is None:
            return False
        try:
            phone = self._vault.decrypt(phone_enc)
        except IntegrityError:
            return False
        return hmac.compare_digest(self._vault.lookup_hash(phone), phone_hash)

    def take(self, sealed: str, member_id: str, phone_hash: str | None) -> bytes:
        """The number sealed for ``member_id``, checked against the member's ``phone_hash`` and
        sealed again with HQ's data key, for ``phone_enc``.

        Raises:
            ConfigError: ``key_missing`` (no contact or lookup key here: see :attr:`ready`).
            IntegrityError: ``seal_invalid`` (does not open: another key or member, altered)
                or ``phone_mismatch`` (it opens to a number that is not the member's).
        """
        if self._key is None or self._vault is None:
            raise ConfigError(
                "HQ has no contact key (or no lookup key) to open sealed phone numbers",
                code="key_missing",
            )
        phone = open_phone(self._key, sealed, member_id)
        if phone_hash is None or not hmac.compare_digest(
            self._vault.lookup_hash(phone), phone_hash
        ):
            raise IntegrityError(
                f"the sealed phone number for member {member_id} is not the member's number",
                code="phone_mismatch",
            )
        return self._vault.encrypt(phone)
