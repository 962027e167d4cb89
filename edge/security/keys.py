"""The appliance's keys: systemd credentials when provided, else dev keys made on first use."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.domain.errors import ConfigError
from edge.files import fsync_directory

DATA_KEY_FILE = "data.key"
LOOKUP_KEY_FILE = "lookup.key"
DEVICE_SIGNING_KEY_FILE = "device-signing.pem"
MEMBER_CODE_SIGNING_KEY_FILE = "member-code-signing.pem"
HQ_MEMBER_CODE_PUBLIC_KEY_FILE = "hq-member-code.pub"
"""HQ's member-code public key as the enrolment bundle installs it in the keys directory."""
HQ_CONTACT_PUBLIC_KEY_FILE = "hq-contact.pub"
"""HQ's contact public key (EC P-256) as the enrolment bundle installs it."""

SECRET_BYTES = 32
_MAX_KEY_FILE_BYTES = 64 * 1024


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted Ed25519 private key from a PEM file.

    Raises:
        ConfigError: the file is missing, unreadable, or not an unencrypted Ed25519 key; the
            message names the path so whoever installs the key knows which file to fix.
    """
    return _parse_private_key(read_key_file(path), path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file (SubjectPublicKeyInfo).

    Raises:
        ConfigError: the file is missing, unreadable, or not an Ed25519 public key.
    """
    data = read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{path} is not a PEM public key: {exc}", code="key_invalid", path=str(path)
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 public key",
            code="key_invalid",
            path=str(path),
        )
    return key


class KeyStore:
    """Hands out the device's key material, loading each key the first time it is asked for.

    Production keys arrive as systemd credentials (``LoadCredential=`` puts them in
    ``$CREDENTIALS_DIRECTORY``); the caller passes that directory in. A file found there wins
    and is never written. Any key not provided that way is a dev key: made in ``keys_dir`` on
    first use (directory 0700, files 0600) and reused afterwards, so a laptop or CI run needs no
    setup. Creation never overwrites: if two processes race, both end up with the same key.
    Each key is read once and kept for the life of the store; a rotated key takes a restart.

    Example::

        keys = KeyStore(data_dir / "keys", credentials_dir=creds_dir_or_none)
        vault = PhoneVault(keys.data_key, keys.lookup_key)
    """

    def __init__(self, keys_dir: Path, credentials_dir: Path | None = None) -> None:
        self._keys_dir = Path(keys_dir)
        self._credentials_dir = Path(credentials_dir) if credentials_dir is not None else None
        self._lock = threading.Lock()
        self._secrets: dict[str, bytes] = {}
        self._private_keys: dict[str, Ed25519PrivateKey] = {}
        self._configured_private_keys: dict[Path, Ed25519PrivateKey] = {}
        self._public_keys: dict[Path, Ed25519PublicKey] = {}
        self._contact_keys: dict[Path, ec.EllipticCurvePublicKey] = {}

    @property
    def keys_dir(self) -> Path:
        """Where this store keeps (and makes) key files that no credential provides."""
        return self._keys_dir

    def credential_path(self, name: str) -> Path | None:
        """The systemd credential providing ``name``, if there is one (it wins over a file)."""
        if self._credentials_dir is None:
            return None
        credential = self._credentials_dir / name
        return credential if credential.exists() else None

    def existing_secret(self, name: str) -> bytes | None:
        """The secret ``name`` as the store would hand it out, or None when there is none yet
        (nothing is made: unlike the properties, asking never creates a dev key)."""
        with self._lock:
            if name in self._secrets:
                return self._secrets[name]
            found = self._material(name)
        return None if found is None else _parse_secret(*found)

    def install_secret(self, name: str, secret: bytes) -> Path:
        """Put ``secret`` in place as the key file ``name`` (0600, written to a temp file,
        fsynced, renamed over the old one, directory fsynced) and hand it out from now on.

        Raises:
            ConfigError: ``key_invalid`` (not 32 bytes), ``key_from_credential`` (a systemd
                credential provides this key; it wins and is never written), or
                ``key_unwritable``.
        """
        if len(secret) != SECRET_BYTES:
            raise ConfigError(f"{name} must be {SECRET_BYTES} bytes", code="key_invalid")
        credential = self.credential_path(name)
        if credential is not None:
            raise ConfigError(
                f"{name} is provided as a systemd credential ({credential}); it is not replaced",
                code="key_from_credential",
                path=str(credential),
            )
        self._ensure_keys_dir()
        path = self._keys_dir / name
        with self._lock:
            _replace_atomically(path, secret)
            self._secrets[name] = secret
        return path

    def restore_secret(self, name: str, previous: bytes | None) -> None:
        """Put back what the key file ``name`` held before :meth:`install_secret` (``None``:
        there was no file), written the same atomic way, and hand that out from now on."""
        path = self._keys_dir / name
        with self._lock:
            if previous is None:
                path.unlink(missing_ok=True)
                fsync_directory(path.parent)
                self._secrets.pop(name, None)
            else:
                _replace_atomically(path, previous)
                self._secrets[name] = previous

    @property
    def data_key(self) -> bytes:
        """AES-256-GCM key for personal data (``data.key``); losing it loses the phone numbers."""
        return self._secret(DATA_KEY_FILE)

    @property
    def lookup_key(self) -> bytes:
        """HMAC key for phone lookup hashes (``lookup.key``): chain-wide, so a member found by
        phone at one store is found at every store. HQ delivers it sealed in the enrolment
        bundle (installed by :func:`edge.provisioning.enrolment.apply_enrolment`); before
        enrolment a dev key is made on first use."""
        return self._secret(LOOKUP_KEY_FILE)

    @property
    def device_signing_key(self) -> Ed25519PrivateKey:
        """This device's Ed25519 key (``device-signing.pem``): signs vouchers it prints."""
        return self._private_key(DEVICE_SIGNING_KEY_FILE)

    def device_signing_public_key(self) -> Ed25519PublicKey | None:
        """The public half of the device key if the device has made it (None: not yet, as
        before it printed anything); never makes one (telemetry asks, on a disk that may be
        full)."""
        with self._lock:
            if DEVICE_SIGNING_KEY_FILE in self._private_keys:
                return self._private_keys[DEVICE_SIGNING_KEY_FILE].public_key()
        found = self._material(DEVICE_SIGNING_KEY_FILE)
        if found is None:
            return None
        with self._lock:  # read once: the next sample finds it here
            key = self._private_keys.setdefault(DEVICE_SIGNING_KEY_FILE, _parse_private_key(*found))
        return key.public_key()

    @property
    def device_public_key_pem(self) -> bytes:
        """The public half of the device key as PEM, to register with HQ and the lanes."""
        return self.device_signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def member_code_signing_key(self, configured: str) -> Ed25519PrivateKey:
        """The key that mints member codes: the configured file, else a local dev key.

        Only HQ holds the real one; the dev key lets a laptop mint codes its own kiosk accepts.
        """
        if configured:
            path = Path(configured)
            with self._lock:
                if path not in self._configured_private_keys:
                    self._configured_private_keys[path] = load_private_key(path)
                return self._configured_private_keys[path]
        return self._private_key(MEMBER_CODE_SIGNING_KEY_FILE)

    def member_code_public_key(self, configured: str) -> Ed25519PublicKey:
        """The key that verifies member codes: the configured file, else HQ's as the
        enrolment bundle installed it (``hq-member-code.pub``), else the dev key's half."""
        installed = self._keys_dir / HQ_MEMBER_CODE_PUBLIC_KEY_FILE
        if configured or installed.exists():
            path = Path(configured) if configured else installed
            with self._lock:
                if path not in self._public_keys:
                    self._public_keys[path] = load_public_key(path)
                return self._public_keys[path]
        return self._private_key(MEMBER_CODE_SIGNING_KEY_FILE).public_key()

    def contact_public_key(self, configured: str = "") -> ec.EllipticCurvePublicKey | None:
        """HQ's contact key, which seals the phone numbers of members who agree to messages:
        the configured file, else the one the enrolment bundle installed
        (``hq-contact.pub``); None when neither is there (not enrolled yet). There is never a
        dev key: a phone sealed to a key HQ does not hold would be lost.

        Raises:
            ConfigError: the file is unreadable or not an EC P-256 public key.
        """
        from edge.security.contact import load_contact_public_key

        path = Path(configured) if configured else self._keys_dir / HQ_CONTACT_PUBLIC_KEY_FILE
        with self._lock:
            if path in self._contact_keys:
                return self._contact_keys[path]
        if not configured and not path.exists():
            return None  # asked again next time: an enrolment may install it meanwhile
        key = load_contact_public_key(path)
        with self._lock:
            return self._contact_keys.setdefault(path, key)

    def _secret(self, name: str) -> bytes:
        with self._lock:
            if name not in self._secrets:
                self._secrets[name] = _parse_secret(*self._made(name, _new_secret))
            return self._secrets[name]

    def _private_key(self, name: str) -> Ed25519PrivateKey:
        with self._lock:
            if name not in self._private_keys:
                data, path = self._made(name, _new_private_key_pem)
                self._private_keys[name] = _parse_private_key(data, path)
            return self._private_keys[name]

    def _material(
        self, name: str, make: Callable[[], bytes] | None = None
    ) -> tuple[bytes, Path] | None:
        """The key file ``name`` (a credential wins) and where it is; none there: a new one
        from ``make`` when given (created without clobbering a racing creator's), else None."""
        credential = self.credential_path(name)
        if credential is not None:
            return read_key_file(credential), credential
        path = self._keys_dir / name
        if path.exists():
            refuse_loose_permissions(path)
            return read_key_file(path), path
        if make is None:
            return None
        self._ensure_keys_dir()
        return _create_exclusively(path, make()), path

    def _made(self, name: str, make: Callable[[], bytes]) -> tuple[bytes, Path]:
        found = self._material(name, make)
        assert found is not None  # made when missing
        return found

    def _ensure_keys_dir(self) -> None:
        if self._keys_dir.is_dir():
            return
        try:
            self._keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self._keys_dir, 0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise ConfigError(
                f"cannot create the key directory {self._keys_dir}: {exc}",
                code="key_unwritable",
                path=str(self._keys_dir),
            ) from exc


def load_secret(path: Path, *, check_mode: bool = True) -> bytes:
    """A 32-byte secret from ``path`` (32 raw bytes, or 64 hex digits).

    ``check_mode``: refuse a file other users may read (a systemd credential is not checked:
    systemd guards its directory).

    Raises:
        ConfigError: ``key_unreadable`` (missing or unreadable), ``key_permissions`` or
            ``key_invalid``.
    """
    if check_mode:
        refuse_loose_permissions(path)
    return _parse_secret(read_key_file(path), path)


def create_secret_file(path: Path) -> bool:
    """A new random 32-byte secret in ``path`` (0600, fsynced, its directory made if missing
    and fsynced), unless one is there: it is never overwritten. True if this call made it.

    Raises:
        ConfigError: ``key_unwritable``.
    """
    if path.exists():
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the key directory {path.parent}: {exc.strerror or exc}",
            code="key_unwritable",
            path=str(path.parent),
        ) from exc
    return _link_new(path, _new_secret())


def _new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def _new_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_key_file(path: Path) -> bytes:
    """A key file's bytes (at most 64 KiB).

    Raises:
        ConfigError: ``key_unreadable``, or ``key_invalid`` for a file too large to be a key.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read key file {path}: {exc.strerror or exc}",
            code="key_unreadable",
            path=str(path),
        ) from exc
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{path} is too large to be a key", code="key_invalid", path=str(path))
    return data


def _parse_private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key: {exc}",
            code="key_invalid",
            path=str(path),
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 private key",
            code="key_invalid",
            path=str(path),
        )
    return key


def _parse_secret(data: bytes, path: Path) -> bytes:
    """Accept 32 raw bytes, or 64 hex digits (what ``openssl rand -hex 32`` prints)."""
    if len(data) == SECRET_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * SECRET_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    raise ConfigError(
        f"{path} must hold {SECRET_BYTES} raw bytes or {2 * SECRET_BYTES} hex digits",
        code="key_invalid",
        path=str(path),
    )


def refuse_loose_permissions(path: Path) -> None:
    """A key others can read is a leaked key; say so instead of using it quietly."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(
            f"cannot read key file {path}: {exc.strerror or exc}",
            code="key_unreadable",
            path=str(path),
        ) from exc
    if mode & 0o077:
        raise ConfigError(
            f"{path} is accessible to other users (mode {mode & 0o777:o}); chmod 600 it",
            code="key_permissions",
            path=str(path),
        )


@contextlib.contextmanager
def _synced_temp(path: Path, data: bytes, verb: str) -> Iterator[str]:
    """``data`` in a 0600 temp file beside ``path``, written and fsynced; removed afterwards
    unless the caller moved it. An OS error becomes a ConfigError naming the key file."""
    try:
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            f"cannot {verb} key file {path}: {exc.strerror or exc}",
            code="key_unwritable",
            path=str(path),
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield temp_name
    except OSError as exc:
        raise ConfigError(
            f"cannot {verb} key file {path}: {exc.strerror or exc}",
            code="key_unwritable",
            path=str(path),
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def _create_exclusively(path: Path, data: bytes) -> bytes:
    """Write ``data`` to a new file atomically and without clobbering; return what is there.

    The content goes to a 0600 temp file that is then hard-linked into place: the link fails if
    the name exists, so a concurrent creator's key is kept and read back instead of replaced
    (replacing a data key another process already used would orphan what it encrypted).
    """
    return data if _link_new(path, data) else read_key_file(path)


def _link_new(path: Path, data: bytes) -> bool:
    """``data`` as the new file ``path`` (see :func:`_create_exclusively`); False if one was
    there already (it is left as it is)."""
    with _synced_temp(path, data, "create") as temp_name:
        try:
            os.link(temp_name, path)
        except FileExistsError:
            return False
        fsync_directory(path.parent)
        return True


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) so that a crash leaves the old or the new file whole."""
    with _synced_temp(path, data, "write") as temp_name:
        os.replace(temp_name, path)
        fsync_directory(path.parent)
