"""HQ's enrolment desk: from a device's pairing slip to its signed enrolment bundle.

The desk reads the slip's QR code (the text, or a photo of it), checks the certificate
request inside, assigns the device id (or takes the one given), gives the device a block of
card serials no other device has ever had, signs the request with the broker's CA (common
name = device id), and issues the enrolment bundle signed with HQ's enrolment key, as a file
and as a QR code image the kiosk's camera can read. Every bundle carries the chain's phone
lookup key (``hq-lookup.key`` beside the CA, one for the whole chain so that a member is found
by phone at every store), sealed to the public key of the device's certificate request and
bound to its device id and serial: only that device can open it. The registration, the card
range, the pairing code's use and every action are rows in HQ's database, written in one
transaction.

Re-provisioning: a device moves to another store with a new slip (same or new device id); a
broken device is replaced by another that takes its place. The identity a device leaves is
revoked: its certificate goes on HQ's revocation list, written as a CRL (PEM) for the broker's
``crlfile``. Bad input (a damaged QR code, a request whose signature is wrong, a code already
used, no card serials left, an unknown device) raises and changes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from edge.domain.errors import ConfigError, InvalidInput, NotFound, Refusal
from edge.protocol import ProtocolError, check_name
from edge.provisioning.bundle import (
    MAX_QR_TEXT,
    Enrolment,
    PairingQr,
    bundle_to_qr,
    code_digest,
    issue_bundle,
    lookup_key_id,
    parse_pairing_qr,
    seal_lookup_key,
)
from edge.security.keys import create_secret_file, load_private_key, load_secret
from edge.security.revocation import crl_pem
from hq.audit import Actor, record
from hq.contact_key import CONTACT_KEY_FILE, bundle_public_keys
from hq.models import (
    CardRange,
    EnrolledDevice,
    EnrolmentAction,
    FleetDevice,
    RevokedCertificate,
    UsedPairingCode,
)

MAX_CARD_SERIAL = 10**10 - 1  # card serials have at most 10 digits
CRL_FILE = "crl.pem"
LOOKUP_KEY_FILE = "hq-lookup.key"
MEMBER_CODE_KEY_FILE = "hq-member-code.pem"  # signs the member codes the member page shows
MEMBER_CODE_PUBLIC_FILE = "hq-member-code.pub.pem"  # the kiosks' security.member_code_public_key
_DEVICE_NUMBER = re.compile(r"^K(\d+)$")


def _pem_public(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(path: Path) -> str:
    """An Ed25519 public key (PEM) from ``path``, which holds the public or the private key.

    Raises:
        ConfigError: the file is missing or holds no Ed25519 key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}", code="key_missing", path=str(path)) from None
    if b"PRIVATE KEY" in data:
        return _pem_public(load_private_key(path).public_key())
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM key: {exc}", code="key_invalid") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 key", code="key_invalid", path=str(path))
    return _pem_public(key)


def write_enrol_key(directory: Path) -> tuple[Path, Path]:
    """A new enrolment key pair: ``hq-enrol.key`` (kept at HQ) and ``hq-enrol.pub`` (for the
    image build). An existing key is never overwritten.

    Raises:
        Refusal: ``key_exists``.
    """
    private, public = directory / "hq-enrol.key", directory / "hq-enrol.pub"
    return _write_key_pair(private, public)


def write_member_code_key(directory: Path) -> tuple[Path, Path]:
    """HQ's member-code key pair: ``hq-member-code.pem`` (Ed25519, mode 0600, kept at HQ: it
    signs the rotating codes on members' phones) and ``hq-member-code.pub.pem`` (for every
    kiosk's ``security.member_code_public_key``). An existing key is never overwritten.

    Raises:
        Refusal: ``key_exists``.
    """
    private, public = directory / MEMBER_CODE_KEY_FILE, directory / MEMBER_CODE_PUBLIC_FILE
    return _write_key_pair(private, public)


def _write_key_pair(private: Path, public: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``private`` as PKCS8 PEM (mode 0600), ``public`` as PEM;
    neither may exist yet.

    Raises:
        Refusal: ``key_exists``.
    """
    if private.exists() or public.exists():
        raise Refusal(f"{private} or {public} already exists", code="key_exists")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public.write_text(_pem_public(key.public_key()))
    return private, public


def write_lookup_key(path: Path) -> Path:
    """Make the chain's phone-lookup key: 32 random bytes in ``path`` (mode 0600). Made once
    for the whole chain and kept (and backed up) like the CA key: every device's member
    lookup hashes depend on it. An existing key is never overwritten.

    Raises:
        Refusal: ``key_exists``.
        ConfigError: ``key_unwritable``.
    """
    if not create_secret_file(path):
        raise Refusal(f"{path} already exists", code="key_exists")
    return path


@dataclass(frozen=True)
class DeskSettings:
    """What the desk signs with and what it hands out.

    ``ca_dir`` holds the broker CA (``ca.crt``, ``ca.key``); the CRL is written there too
    unless ``crl_file`` says otherwise. ``command_key`` and ``update_key`` may name the
    private or the public key: only the public half goes into bundles. ``lookup_key`` is the
    chain's phone-lookup key (default ``<ca_dir>/hq-lookup.key``), sealed into every bundle.
    """

    ca_dir: Path
    enrol_key: Path
    command_key: Path
    update_key: Path
    broker_host: str
    broker_port: int
    rules_version: str = ""
    catalogue_version: str = ""
    crl_file: Path | None = None
    card_range_base: int = 100_000
    card_range_size: int = 50_000
    card_range_limit: int = MAX_CARD_SERIAL
    certificate_days: int = 825
    lookup_key: Path | None = None

    @property
    def crl_path(self) -> Path:
        return self.crl_file or self.ca_dir / CRL_FILE

    @property
    def lookup_key_path(self) -> Path:
        return self.lookup_key or self.ca_dir / LOOKUP_KEY_FILE


def desk_settings(
    *,
    ca_dir: Path | None,
    command_key: Path | None,
    broker_host: str,
    broker_port: int,
    enrol_key: Path | None = None,
    update_key: Path | None = None,
    rules_version: str = "",
    catalogue_version: str = "",
    card_range_size: int = 50_000,
    lookup_key: Path | None = None,
) -> DeskSettings:
    """The desk's settings from HQ's: keys in the CA's folder unless named.

    Raises:
        ConfigError: ``no_ca`` when no CA folder is known.
    """
    if ca_dir is None:
        raise ConfigError(
            "name the broker CA with --ca-dir (or --tls-dir on kiosk hq)", code="no_ca"
        )
    return DeskSettings(
        ca_dir=ca_dir,
        enrol_key=enrol_key or ca_dir / "hq-enrol.key",
        command_key=command_key or ca_dir / "hq-command.key",
        update_key=update_key or ca_dir / "hq-update.pub",
        broker_host=broker_host,
        broker_port=broker_port,
        rules_version=rules_version,
        catalogue_version=catalogue_version,
        card_range_size=card_range_size,
        lookup_key=lookup_key,
    )


@dataclass(frozen=True)
class Issued:
    """A bundle the desk issued, and where it wrote it."""

    action: str
    device_id: str
    store_id: str
    serial: str
    card_range_start: int
    card_range_end: int
    certificate_serial: str
    bundle_path: Path
    qr_path: Path
    qr_chars: int
    revoked: tuple[str, ...] = ()
    lookup_key_id: str = ""  # fingerprint of the chain lookup key sealed into the bundle


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    store_id: str
    serial: str
    state: str
    card_range_start: int
    card_range_end: int
    certificate_serial: str
    certificate_expires: dt.datetime
    enrolled_at: dt.datetime
    successor: str
    fleet_state: str
    last_seen: dt.datetime | None


@dataclass(frozen=True)
class ActionRow:
    at: dt.datetime
    action: str
    device_id: str
    store_id: str
    actor: str
    detail: dict[str, Any]


def read_qr_photo(path: Path) -> str:
    """The text of the first QR code in a photo (of a pairing slip).

    Raises:
        InvalidInput: ``no_qr``: the file is not an image or shows no QR code.
    """
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            results = zxingcpp.read_barcodes(image.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInput(f"{path}: not a readable image: {exc}", code="no_qr") from None
    for result in results:
        if result.format == zxingcpp.BarcodeFormat.QRCode and result.text:
            return str(result.text)
    raise InvalidInput(f"{path}: no QR code found", code="no_qr")


def write_qr_png(text: str, path: Path) -> None:
    """``text`` as one QR code (level L, the densest), 4 pixels a module, quiet zone 4."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_L

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_L, box_size=4, border=4)
    code.add_data(text.encode("ascii"))
    code.make(fit=True)
    image = code.make_image()
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        image.save(handle, "PNG")
    os.replace(tmp, path)


class EnrolmentDesk:
    """HQ's enrolment desk on HQ's database (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        settings: DeskSettings,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        source: str = "cli",
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.source = source  # where the actor works: cli or web (HQ's audit log)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._outer: Session | None = None

    def within(self, session: Session) -> EnrolmentDesk:
        """The desk working in ``session``'s transaction (the console's request), which
        commits or rolls back what it does with the rest of the request."""
        desk = copy.copy(self)
        desk._outer = session
        return desk

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        if self._outer is not None:  # a refusal rolls back the whole request
            yield self._outer
            return
        with self._sessions.begin() as session:
            yield session

    # -- signing -----------------------------------------------------------------------------

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_dir = self.settings.ca_dir
        try:
            cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
            key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the broker CA in {ca_dir} (ca.crt, ca.key) is unusable: {exc}", code="ca"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{ca_dir / 'ca.key'} is not an EC key", code="ca")
        return cert, key

    def _check_request(self, slip: PairingQr) -> x509.CertificateSigningRequest:
        try:
            csr = x509.load_der_x509_csr(slip.csr_der)
        except ValueError as exc:
            raise InvalidInput(
                f"the slip's certificate request is unreadable: {exc}", code="csr_invalid"
            ) from None
        if not csr.is_signature_valid:
            raise InvalidInput(
                "the slip's certificate request is not signed by its key (damaged or forged)",
                code="csr_signature",
            )
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise InvalidInput("the device key must be EC P-256", code="csr_invalid")
        serials = csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        if not serials or serials[0].value != slip.serial:
            raise InvalidInput(
                "the certificate request names another serial than the slip",
                code="csr_invalid",
            )
        return csr

    def _sign(
        self,
        csr: x509.CertificateSigningRequest,
        device_id: str,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        now = self.clock()
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        *ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
                        x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self.settings.certificate_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    def _lookup_key(self, session: Session) -> bytes:
        """The chain's lookup key: the file, made on the first enrolment if there is none.

        Refused when the key is gone or differs from the one earlier bundles carried (its
        fingerprint is in every enrolment record): devices enrolled with another key would
        hash phone numbers differently and stop finding each other's members.
        """
        path = self.settings.lookup_key_path
        recorded = self._recorded_lookup_key_id(session)
        if not path.exists():
            if recorded is not None:
                raise ConfigError(
                    f"the chain's lookup key {path} is missing, but devices were enrolled with "
                    f"key {recorded}: restore it from HQ's backup (a new key would split the "
                    "chain's phone lookup)",
                    code="lookup_key_missing",
                    path=str(path),
                )
            with contextlib.suppress(Refusal):  # made at this moment by another desk: use it
                write_lookup_key(path)
        key = load_secret(path)
        if recorded is not None and lookup_key_id(key) != recorded:
            raise ConfigError(
                f"{path} is not the lookup key earlier bundles carried ({recorded}): restore "
                "the chain's key",
                code="lookup_key_changed",
                path=str(path),
            )
        return key

    @staticmethod
    def _recorded_lookup_key_id(session: Session) -> str | None:
        query = (
            select(EnrolmentAction.detail)
            .where(EnrolmentAction.detail.like('%"lookup_key_id"%'))
            .order_by(EnrolmentAction.id.desc())
            .limit(1)
        )
        detail = session.scalar(query)
        if detail is None:
            return None
        return str(json.loads(detail)["lookup_key_id"])

    # -- bookkeeping -------------------------------------------------------------------------

    def _allocate_range(self, session: Session, device_id: str) -> tuple[int, int]:
        s = self.settings
        top = session.scalar(select(func.max(CardRange.range_end)))
        start = max(s.card_range_base, (top or -1) + 1)
        end = start + s.card_range_size - 1
        if end > min(s.card_range_limit, MAX_CARD_SERIAL):
            raise Refusal(
                f"no card serials left for a block of {s.card_range_size} (next would be "
                f"{start}-{end}, the last serial is {s.card_range_limit})",
                code="range_exhausted",
            )
        session.add(
            CardRange(
                range_start=start, range_end=end, device_id=device_id, allocated_at=self.clock()
            )
        )
        return start, end

    def _next_device_id(self, session: Session) -> str:
        numbers = [
            int(m.group(1))
            for d in session.scalars(select(EnrolledDevice.device_id))
            if (m := _DEVICE_NUMBER.match(d))
        ]
        return f"K{max(numbers, default=0) + 1:03d}"

    def _log(
        self,
        session: Session,
        action: str,
        device_id: str,
        store_id: str,
        actor: str,
        **detail: Any,
    ) -> None:
        at = self.clock()
        session.add(
            EnrolmentAction(
                at=at,
                action=action,
                device_id=device_id,
                store_id=store_id,
                actor=actor,
                detail=json.dumps(detail, sort_keys=True, ensure_ascii=False, default=str),
            )
        )
        record(
            session,
            Actor(actor, self.source),
            f"device.{action}",
            device_id,
            at,
            after=detail,
            store_id=store_id,
        )

    def _revoke_row(self, session: Session, device: EnrolledDevice, reason: str) -> str:
        if session.get(RevokedCertificate, device.certificate_serial) is None:
            session.add(
                RevokedCertificate(
                    certificate_serial=device.certificate_serial,
                    device_id=device.device_id,
                    reason=reason,
                    revoked_at=self.clock(),
                )
            )
        return device.certificate_serial

    def _device(self, session: Session, device_id: str) -> EnrolledDevice:
        device = session.get(EnrolledDevice, device_id)
        if device is None:
            raise NotFound(f"no device {device_id} is enrolled", code="unknown_device")
        return device

    @staticmethod
    def _name(value: str, what: str) -> str:
        try:
            return check_name(value)
        except (ProtocolError, ValueError) as exc:
            raise InvalidInput(f"{what} {value!r}: {exc}", code="bad_name") from None

    # -- the desk's actions ------------------------------------------------------------------

    def enrol(
        self,
        qr_text: str,
        *,
        store_id: str,
        out_dir: Path,
        device_id: str | None = None,
        actor: str = "hq",
    ) -> Issued:
        """Register a new device from its slip and issue its bundle.

        Raises:
            InvalidInput: the QR code or its certificate request is bad.
            Refusal: the pairing code was used, the device id is taken, no serials left.
        """
        return self._issue(
            "enrol", qr_text, store_id=store_id, device_id=device_id, out_dir=out_dir, actor=actor
        )

    def move(
        self,
        device_id: str,
        qr_text: str,
        *,
        store_id: str,
        out_dir: Path,
        new_device_id: str | None = None,
        actor: str = "hq",
    ) -> Issued:
        """A device goes to another store: a new bundle from its new slip. With the same
        device id it keeps its card range; with a new one the old id is retired. Either way
        the certificate it had is revoked (superseded).

        Raises:
            NotFound: ``unknown_device``.
        """
        return self._issue(
            "move",
            qr_text,
            store_id=store_id,
            device_id=new_device_id or device_id,
            out_dir=out_dir,
            actor=actor,
            previous=device_id,
        )

    def replace(
        self,
        broken_device_id: str,
        qr_text: str,
        *,
        out_dir: Path,
        device_id: str | None = None,
        store_id: str | None = None,
        reason: str = "device replaced",
        actor: str = "hq",
    ) -> Issued:
        """Another device takes a broken one's place: the broken device's certificate is
        revoked; the new one gets the broken one's device id (and card range) unless given
        its own.

        Raises:
            NotFound: ``unknown_device``.
        """
        return self._issue(
            "replace",
            qr_text,
            store_id=store_id,
            device_id=device_id or broken_device_id,
            out_dir=out_dir,
            actor=actor,
            previous=broken_device_id,
            reason=reason,
        )

    def _issue(
        self,
        action: str,
        qr_text: str,
        *,
        store_id: str | None,
        device_id: str | None,
        out_dir: Path,
        actor: str,
        previous: str | None = None,
        reason: str = "",
    ) -> Issued:
        ca_cert, ca_key = self._ca()
        slip = parse_pairing_qr(qr_text)
        csr = self._check_request(slip)
        enrol_key = load_private_key(self.settings.enrol_key)
        command_pem = load_public_pem(self.settings.command_key)
        update_pem = load_public_pem(self.settings.update_key)
        contact_pem, member_code_pem = bundle_public_keys(
            self.settings.ca_dir / CONTACT_KEY_FILE, self.settings.ca_dir / MEMBER_CODE_KEY_FILE
        )
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        written: list[Path] = []
        try:
            with self._tx() as session:
                digest = code_digest(slip.code)
                used = session.get(UsedPairingCode, digest)
                if used is not None:
                    raise Refusal(
                        f"this pairing code was already used (for {used.device_id} on "
                        f"{used.used_at:%Y-%m-%d %H:%M}Z): print a new slip on the device",
                        code="pairing_used",
                    )
                old = self._device(session, previous) if previous is not None else None
                previous_store = old.store_id if old is not None else None
                if old is not None and old.state != "active" and action == "move":
                    raise Refusal(
                        f"{old.device_id} is {old.state}; only an active device can move",
                        code="device_inactive",
                    )
                store = self._name(store_id or (old.store_id if old else ""), "store id")
                new_id = self._name(device_id or self._next_device_id(session), "device id")
                existing = session.get(EnrolledDevice, new_id)
                keeps_identity = old is not None and new_id == old.device_id
                if existing is not None and not keeps_identity:
                    raise Refusal(
                        f"device id {new_id} is already enrolled ({existing.state})",
                        code="device_id_taken",
                    )
                if keeps_identity and old is not None:
                    start, end = old.card_range_start, old.card_range_end
                else:
                    start, end = self._allocate_range(session, new_id)
                revoked: list[str] = []
                if old is not None:
                    why = (
                        f"superseded: moved to {store}"
                        if action == "move"
                        else f"replaced: {reason}"
                    )
                    revoked.append(self._revoke_row(session, old, why))
                cert = self._sign(csr, new_id, ca_cert, ca_key)
                cert_serial = format(cert.serial_number, "x")
                lookup_key = self._lookup_key(session)
                device_public = csr.public_key()
                assert isinstance(device_public, ec.EllipticCurvePublicKey)  # _check_request
                now = self.clock()
                enrolment = Enrolment(
                    store_id=store,
                    device_id=new_id,
                    broker_host=self.settings.broker_host,
                    broker_port=self.settings.broker_port,
                    ca_cert_pem=ca_pem,
                    device_cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                    card_range_start=start,
                    card_range_end=end,
                    rules_version=self.settings.rules_version,
                    catalogue_version=self.settings.catalogue_version,
                    pairing_code=slip.code,
                    hq_command_public_key_pem=command_pem,
                    hq_update_public_key_pem=update_pem,
                    issued_at=now.isoformat(),
                    replaces_device=previous if action == "replace" and previous else "",
                    lookup_key_sealed=seal_lookup_key(
                        lookup_key, device_public, new_id, slip.serial
                    ),
                    hq_contact_public_key_pem=contact_pem,
                    hq_member_code_public_key_pem=member_code_pem,
                )
                bundle = issue_bundle(enrolment, enrol_key)
                qr = bundle_to_qr(bundle)
                if len(qr) > MAX_QR_TEXT:
                    raise Refusal(
                        f"the bundle's QR text is {len(qr)} characters, more than one QR code "
                        f"holds ({MAX_QR_TEXT}): hand over the bundle file",
                        code="bundle_too_big",
                    )
                if old is not None and not keeps_identity:
                    old.state = "retired"
                    old.successor = new_id
                    old.updated_at = now
                if keeps_identity and old is not None:
                    row = old
                    row.store_id, row.serial, row.state = store, slip.serial, "active"
                    row.certificate_serial = cert_serial
                    row.certificate_expires = cert.not_valid_after_utc
                    row.updated_at = now
                else:
                    session.add(
                        EnrolledDevice(
                            device_id=new_id,
                            store_id=store,
                            serial=slip.serial,
                            state="active",
                            card_range_start=start,
                            card_range_end=end,
                            certificate_serial=cert_serial,
                            certificate_expires=cert.not_valid_after_utc,
                            enrolled_at=now,
                            updated_at=now,
                            successor="",
                        )
                    )
                session.add(
                    UsedPairingCode(
                        code_sha256=digest, serial=slip.serial, device_id=new_id, used_at=now
                    )
                )
                self._log(
                    session,
                    action,
                    new_id,
                    store,
                    actor,
                    serial=slip.serial,
                    certificate_serial=cert_serial,
                    card_range=[start, end],
                    previous_device_id=previous,
                    previous_store_id=previous_store,
                    revoked=revoked,
                    reason=reason,
                    lookup_key_id=lookup_key_id(lookup_key),
                )
                session.flush()
                out_dir.mkdir(parents=True, exist_ok=True)
                bundle_path = out_dir / f"{new_id}.enrol"
                qr_path = out_dir / f"{new_id}.enrol.png"
                tmp = bundle_path.with_name(f".{bundle_path.name}.tmp")
                tmp.write_bytes(bundle)
                os.replace(tmp, bundle_path)
                written.append(bundle_path)
                write_qr_png(qr, qr_path)
                written.append(qr_path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        if revoked:
            with self._tx() as session:
                self._write_crl(session, ca_cert, ca_key)
        return Issued(
            action=action,
            device_id=new_id,
            store_id=store,
            serial=slip.serial,
            card_range_start=start,
            card_range_end=end,
            certificate_serial=cert_serial,
            bundle_path=bundle_path,
            qr_path=qr_path,
            qr_chars=len(qr),
            revoked=tuple(revoked),
            lookup_key_id=lookup_key_id(lookup_key),
        )

    def revoke(self, device_id: str, reason: str, *, actor: str = "hq") -> str:
        """Put the device's certificate on the revocation list; returns its serial (hex).

        Raises:
            NotFound: ``unknown_device``.
            InvalidInput: ``reason_required``.
            Refusal: ``already_revoked``.
        """
        if not reason.strip():
            raise InvalidInput("say why the device is revoked", code="reason_required")
        with self._tx() as session:
            device = self._device(session, device_id)
            if device.state == "revoked":
                raise Refusal(f"{device_id} is already revoked", code="already_revoked")
            serial = self._revoke_row(session, device, reason.strip())
            device.state = "revoked"
            device.updated_at = self.clock()
            self._log(
                session,
                "revoke",
                device_id,
                device.store_id,
                actor,
                certificate_serial=serial,
                reason=reason.strip(),
            )
        self.write_crl()
        return serial

    # -- what HQ staff read ------------------------------------------------------------------

    def devices(self) -> list[DeviceRow]:
        with self._tx() as session:
            rows = session.execute(
                select(EnrolledDevice, FleetDevice)
                .outerjoin(FleetDevice, FleetDevice.device_id == EnrolledDevice.device_id)
                .order_by(EnrolledDevice.device_id)
            ).all()
            return [
                DeviceRow(
                    device_id=d.device_id,
                    store_id=d.store_id,
                    serial=d.serial,
                    state=d.state,
                    card_range_start=d.card_range_start,
                    card_range_end=d.card_range_end,
                    certificate_serial=d.certificate_serial,
                    certificate_expires=d.certificate_expires,
                    enrolled_at=d.enrolled_at,
                    successor=d.successor,
                    fleet_state=f.state if f is not None else "never seen",
                    last_seen=f.last_seen if f is not None else None,
                )
                for d, f in rows
            ]

    def actions(self, device_id: str | None = None) -> list[ActionRow]:
        query = select(EnrolmentAction).order_by(EnrolmentAction.id)
        if device_id is not None:
            query = query.where(EnrolmentAction.device_id == device_id)
        with self._tx() as session:
            return [
                ActionRow(a.at, a.action, a.device_id, a.store_id, a.actor, json.loads(a.detail))
                for a in session.scalars(query)
            ]

    def revoked_serials(self) -> list[str]:
        with self._tx() as session:
            return list(session.scalars(select(RevokedCertificate.certificate_serial)))

    # -- the CRL ----------------------------------------------------------------------------

    def write_crl(self) -> Path:
        """Write the CRL (PEM) for the broker's ``crlfile`` from the revocation list."""
        ca_cert, ca_key = self._ca()
        with self._tx() as session:
            return self._write_crl(session, ca_cert, ca_key)

    def _write_crl(
        self, session: Session, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
    ) -> Path:
        revoked = [
            (int(row.certificate_serial, 16), row.revoked_at)
            for row in session.scalars(
                select(RevokedCertificate).order_by(RevokedCertificate.revoked_at)
            )
        ]
        path = self.settings.crl_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(crl_pem(ca_cert, ca_key, revoked, self.clock()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path
