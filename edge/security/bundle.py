"""Update bundles: a tar of wheels with a manifest HQ signs with its Ed25519 update key.

Layout::

    manifest.json   {"format": 1, "version": "0.2.0", "wheel": "<the appliance's wheel>",
                     "files": {"wheels/<name>.whl": "<sha256>", ...}, "complete": false}
    manifest.sig    signature of manifest.json's bytes, domain ``mck/update/v1``
    wheels/*.whl    the appliance's wheel and any dependency wheels

``complete`` says the bundle carries every dependency, so the device installs with no
package index at all; otherwise pip may fetch what is missing from the configured index.
Only the manifest is signed; every other member is bound to it by its SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
import zlib
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.domain.errors import IntegrityError
from edge.files import file_sha256
from edge.security.signing import sign_bytes, verify_bytes

UPDATE_DOMAIN = b"mck/update/v1"
FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_MAX_MANIFEST = 256 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class UpdateManifest:
    version: str
    wheel: str
    files: dict[str, str]
    complete: bool
    created_at: str


def build_bundle(
    wheels: Sequence[Path],
    version: str,
    signing_key: Ed25519PrivateKey,
    out: Path,
    *,
    complete: bool = False,
    now: datetime | None = None,
) -> UpdateManifest:
    """HQ's side: a signed bundle of ``wheels``; the first is the appliance's own wheel."""
    if not wheels:
        raise ValueError("a bundle needs the appliance's wheel")
    files = {f"wheels/{w.name}": file_sha256(w) for w in wheels}
    manifest = UpdateManifest(
        version=version,
        wheel=wheels[0].name,
        files=files,
        complete=complete,
        created_at=(now or datetime.now(UTC)).isoformat(),
    )
    body = json.dumps({"format": FORMAT, **manifest.__dict__}, sort_keys=True, indent=2).encode()
    with tarfile.open(out, "w") as tar:
        _add_bytes(tar, MANIFEST, body)
        _add_bytes(tar, SIGNATURE, sign_bytes(signing_key, UPDATE_DOMAIN, body))
        for wheel in wheels:
            tar.add(wheel, arcname=f"wheels/{wheel.name}", recursive=False)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _read_member(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise IntegrityError(f"update bundle has no {name}", code="bundle_invalid") from None
    handle = tar.extractfile(member) if member.isfile() else None
    if handle is None or member.size > limit:
        raise IntegrityError(f"update bundle's {name} is not a small file", code="bundle_invalid")
    return handle.read()


def verify_bundle(
    bundle: Path, public_key: Ed25519PublicKey, staging: Path | None
) -> UpdateManifest:
    """Check the signature and every file, and unpack the wheels into ``staging``.

    Nothing but the signed manifest's files is written, and each only after its hash matched.
    With ``staging`` None nothing is written: the bundle is only checked (the sync agent does
    this before it queues a bundle HQ sent).

    Raises:
        IntegrityError: ``bundle_signature`` when HQ did not sign it, ``bundle_invalid`` when
            it is malformed or a file does not match the manifest.
    """
    try:
        tar = tarfile.open(bundle, "r:*")  # noqa: SIM115  (closed by the with below)
    except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError):
        raise IntegrityError(
            f"{bundle.name} is not an update bundle (not a tar archive); "
            "an update bundle is the .tar HQ publishes",
            code="bundle_invalid",
        ) from None
    try:
        with tar:
            return _verify_open(tar, bundle, public_key, staging)
    except _DAMAGED:
        raise IntegrityError(
            f"{bundle.name} is damaged or incomplete (its archive ends early or is corrupt); "
            "copy the bundle again",
            code="bundle_invalid",
        ) from None


# What reading a cut or corrupted archive raises (tarfile's own errors, and those of the
# decompressors it reads through): never a reason for more than a one-line refusal.
_DAMAGED = (EOFError, tarfile.TarError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _verify_open(
    tar: tarfile.TarFile, bundle: Path, public_key: Ed25519PublicKey, staging: Path | None
) -> UpdateManifest:
    """:func:`verify_bundle` on the opened archive."""
    body = _read_member(tar, MANIFEST, _MAX_MANIFEST)
    signature = _read_member(tar, SIGNATURE, 1024)
    if not verify_bytes(public_key, UPDATE_DOMAIN, body, signature):
        raise IntegrityError(
            f"{bundle.name}: signature does not verify with HQ's update key",
            code="bundle_signature",
        )
    manifest = _parse_manifest(body)
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
    seen = set()
    for member in tar.getmembers():
        if member.name in (MANIFEST, SIGNATURE):
            continue
        expected = manifest.files.get(member.name)
        if expected is None or not member.isfile():
            raise IntegrityError(
                f"{bundle.name}: {member.name!r} is not in the signed manifest",
                code="bundle_invalid",
            )
        handle = tar.extractfile(member)
        assert handle is not None
        target = None if staging is None else staging / Path(member.name).name
        digest = hashlib.sha256()
        with target.open("wb") if target is not None else nullcontext() as out:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
        if digest.hexdigest() != expected:
            if target is not None:
                target.unlink()
            raise IntegrityError(
                f"{bundle.name}: {member.name} does not match its signed hash",
                code="bundle_invalid",
            )
        seen.add(member.name)
    missing = set(manifest.files) - seen
    if missing:
        raise IntegrityError(
            f"{bundle.name}: missing {', '.join(sorted(missing))}", code="bundle_invalid"
        )
    return manifest


def _parse_manifest(body: bytes) -> UpdateManifest:
    try:
        raw = json.loads(body)
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        files = {str(k): str(v) for k, v in dict(raw["files"]).items()}
        for name in files:
            if not name.startswith("wheels/") or "/" in name[7:] or not name.endswith(".whl"):
                raise ValueError(f"bad file name {name!r}")
        wheel = str(raw["wheel"])
        if f"wheels/{wheel}" not in files:
            raise ValueError("the appliance's wheel is not among the files")
        version = str(raw["version"])
        if not version or any(c in version for c in "/\\ ") or version.startswith("."):
            raise ValueError(f"bad version {version!r}")
        return UpdateManifest(version, wheel, files, bool(raw["complete"]), str(raw["created_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"update manifest is unusable: {exc}", code="bundle_invalid") from None
