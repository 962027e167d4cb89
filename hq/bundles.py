"""Update bundles kept at HQ: checked as the devices will check them, stored by their SHA-256.

``<bundles>/<sha256>.bundle`` holds each bundle uploaded (:func:`add_bundle`), and
``hq_bundle`` records it: its version, size, who uploaded it and when. The web console serves
the files to the devices at ``{bundle_base_url}/bundles/{sha256}.bundle``
(:func:`bundle_url`); :func:`bundle_file` is the one way from a requested name to a file, and
it only ever yields a recorded bundle's file.

A bundle is refused, in one line and storing nothing, unless it is an update bundle whose
manifest HQ's update key signed and whose every file matches that manifest: a device would
refuse anything else after downloading it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.errors import ConfigError, IntegrityError, InvalidInput, NotFound
from edge.files import fsync_directory
from edge.security.bundle import verify_bundle
from hq.audit import Actor, record
from hq.commands import bundle_facts
from hq.models import UpdateBundle

SUFFIX = ".bundle"
INCOMING = ".incoming"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PREFIX_RE = re.compile(r"^[0-9a-f]{8,64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleInfo:
    """A bundle HQ keeps."""

    sha256: str
    version: str
    size: int
    file_name: str
    uploaded_by: str
    uploaded_at: datetime


def _info(row: UpdateBundle) -> BundleInfo:
    return BundleInfo(
        row.sha256, row.version, row.size, row.file_name, row.uploaded_by, row.uploaded_at
    )


def load_update_key(path: Path) -> Ed25519PublicKey:
    """HQ's update key from ``path``, which holds the public key (``hq-update.pub``) or the
    private one.

    Raises:
        ConfigError: the file cannot be read or holds no Ed25519 key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"HQ's update key {path}: {exc.strerror}", code="key_missing", path=str(path)
        ) from None
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, None)
            key: object = (
                private.public_key() if isinstance(private, Ed25519PrivateKey) else private
            )
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM key: {exc}", code="key_invalid") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 key", code="key_invalid", path=str(path))
    return key


def _copy_in(
    source: bytes | Path,
    target: Path,
    progress: Callable[[int, int], None] | None,
) -> tuple[str, int]:
    """``source`` written to ``target`` (flushed to disk); its SHA-256 and size."""
    digest = hashlib.sha256()
    done = 0
    with target.open("wb") as out:
        if isinstance(source, bytes):
            out.write(source)
            digest.update(source)
            done = len(source)
        else:
            total = source.stat().st_size
            with source.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), done


def add_bundle(
    session: Session,
    store_dir: Path,
    source: bytes | Path,
    actor: Actor,
    now: datetime,
    update_key: Ed25519PublicKey,
    *,
    name: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> BundleInfo:
    """Keep an uploaded bundle (its bytes, or the file at a path) once it proves to be an
    update bundle signed with HQ's ``update_key`` whose every file matches its manifest;
    recorded with its version, size and SHA-256, by ``actor`` (audited). The same bundle
    again changes nothing and returns the one kept. ``name`` is the uploaded file's name
    (default: the path's); ``progress(done, total)`` follows the copy of a file.

    Raises:
        InvalidInput: ``bundle_invalid`` (not a tar, no manifest, a file that does not
            match the signed manifest, damaged), ``bundle_signature`` (HQ's update key did
            not sign it), ``not_a_bundle`` (no such file), ``version_taken`` (another bundle
            already carries its version): nothing stored.
    """
    label = (name or (source.name if isinstance(source, Path) else "the upload"))[:256]
    if isinstance(source, Path) and not source.is_file():
        raise InvalidInput(f"{source}: no such file", code="not_a_bundle")
    incoming = store_dir / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=incoming))
    try:
        # named as uploaded, so a refusal names the file the person chose
        staged = work / (Path(label).name or "upload.tar")
        sha256, size = _copy_in(source, staged, progress)
        try:  # what the device checks after its download, with the same code
            verify_bundle(staged, update_key, None)
            facts = bundle_facts(staged)
        except IntegrityError as exc:
            said = exc.message if staged.name in exc.message else f"{label}: {exc.message}"
            raise InvalidInput(said, code=exc.code) from None
        except ValueError as exc:
            message = str(exc).replace(str(staged), label).splitlines()[0]
            raise InvalidInput(message, code="bundle_invalid") from None
        kept = session.get(UpdateBundle, sha256)
        if kept is None:
            same_version = session.scalar(
                select(UpdateBundle).where(UpdateBundle.version == facts.version)
            )
            if same_version is not None:
                raise InvalidInput(
                    f"{label}: version {facts.version} is bundle {same_version.sha256[:12]} "
                    "already; a rebuilt bundle needs a version of its own (the devices tell "
                    "what they run by its version)",
                    code="version_taken",
                )
        target = store_dir / f"{sha256}{SUFFIX}"
        if not target.is_file():
            os.replace(staged, target)
            fsync_directory(store_dir)
        if kept is not None:
            return _info(kept)
        row = UpdateBundle(
            sha256=sha256,
            version=facts.version,
            size=size,
            file_name=label,
            uploaded_by=actor.name[:64],
            uploaded_at=now,
        )
        session.add(row)
        record(
            session,
            actor,
            "bundle.upload",
            f"bundle:{sha256}",
            now,
            after={"sha256": sha256, "version": facts.version, "size": size, "file": label},
        )
        session.flush()
        return _info(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def list_bundles(session: Session) -> list[BundleInfo]:
    """Every bundle HQ keeps, the newest upload first."""
    rows = session.scalars(
        select(UpdateBundle).order_by(UpdateBundle.uploaded_at.desc(), UpdateBundle.sha256)
    )
    return [_info(r) for r in rows]


def find_bundle(session: Session, text: str) -> BundleInfo:
    """The bundle whose SHA-256 is ``text`` or starts with it (at least 8 hex digits).

    Raises:
        InvalidInput: not hex, or too short. NotFound: no bundle, or several, start so.
    """
    wanted = text.strip().lower()
    if not _PREFIX_RE.match(wanted):
        raise InvalidInput(
            f"{text[:80]!r} is not a bundle's SHA-256 (or its first 8 or more hex digits)",
            code="bad_bundle",
        )
    found = session.scalars(
        select(UpdateBundle).where(UpdateBundle.sha256.startswith(wanted)).limit(2)
    ).all()
    if len(found) != 1:
        what = "no bundle" if not found else "more than one bundle"
        raise NotFound(
            f"{what} at HQ has a SHA-256 starting {wanted} (see `kiosk hq rollout bundles`)"
        )
    return _info(found[0])


def bundle_file(session: Session, store_dir: Path, sha256: str) -> Path | None:
    """The file of the recorded bundle ``sha256``: what the console serves at
    ``/bundles/{sha256}.bundle``. ``None`` for anything else: a name that is not 64 lower-case
    hex digits (no path can be made of it), a bundle HQ never recorded, or a missing file."""
    if not SHA256_RE.match(sha256) or session.get(UpdateBundle, sha256) is None:
        return None
    path = store_dir / f"{sha256}{SUFFIX}"
    return path if path.is_file() else None


def bundle_url(base_url: str, sha256: str) -> str:
    """Where the devices fetch the bundle ``sha256``: ``{base_url}/bundles/{sha256}.bundle``."""
    return f"{base_url.rstrip('/')}/bundles/{sha256}{SUFFIX}"
