"""HQ's copies of the devices' ledger backups, reassembled from :class:`BackupChunk` messages.

Chunks of one backup are written at their offsets into a temporary file under
``<backups>/.incoming/``; when every chunk is in, the file's size and SHA-256 must be the
announced ones, and only then is it moved (atomically, with its manifest beside it) to
``<backups>/<store>/<device>/<name>``, where ``kiosk backup restore`` takes it as it is. A
file that does not match is deleted and refused; nothing half-written is ever in a device's
directory. The last ``keep`` backups of each device are kept.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from edge.files import file_sha256, fsync_directory
from edge.protocol import BackupAck, BackupChunk, BackupManifest, ProtocolError

log = logging.getLogger(__name__)

INCOMING = ".incoming"
SUFFIX = ".db.gz"


@dataclass
class _Transfer:
    """A backup being reassembled: what its first chunk announced, which chunks are in."""

    name: str
    sha256: str
    size: int
    chunk_bytes: int
    count: int
    part: Path
    received: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class StoredBackup:
    path: Path
    manifest: BackupManifest


class BackupStore:
    """Reassembles, verifies and keeps devices' backups (used on HQ's one loop thread)."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = max(keep, 1)
        self._transfers: dict[str, _Transfer] = {}  # one backup in progress per device
        self.stored = 0
        self.refused = 0

    def device_dir(self, store_id: str, device_id: str) -> Path:
        return self.root / store_id / device_id

    def receive(self, chunk: BackupChunk, now: datetime) -> BackupAck | None:
        """Takes one (already validated) chunk; the ack once the backup is complete.

        Raises:
            ProtocolError: the chunk contradicts the chunks before it (it is dropped).
        """
        store_id, device_id = chunk.manifest.store_id, chunk.device_id
        final = self.device_dir(store_id, device_id) / chunk.name
        if self._holds(final, chunk.sha256):
            self._transfers.pop(device_id, None)
            return self._ack(chunk, True, "", now)  # a resend of one already stored
        transfer = self._transfers.get(device_id)
        if transfer is not None and transfer.name == chunk.name:
            announced = (transfer.sha256, transfer.size, transfer.chunk_bytes, transfer.count)
            if announced != (chunk.sha256, chunk.size, chunk.chunk_bytes, chunk.count):
                raise ProtocolError(
                    f"chunk {chunk.index} of {chunk.name} contradicts the transfer in progress"
                )
        else:
            if transfer is not None:  # a newer backup replaces the one in progress
                transfer.part.unlink(missing_ok=True)
            incoming = self.root / INCOMING
            incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
            part = incoming / f"{device_id}-{chunk.name}.part"
            part.write_bytes(b"")
            transfer = _Transfer(
                chunk.name, chunk.sha256, chunk.size, chunk.chunk_bytes, chunk.count, part
            )
            self._transfers[device_id] = transfer
        if chunk.index not in transfer.received:
            with transfer.part.open("r+b") as handle:
                handle.seek(chunk.offset)
                handle.write(chunk.raw())
            transfer.received.add(chunk.index)
        if len(transfer.received) < transfer.count:
            return None
        del self._transfers[device_id]
        return self._finish(transfer, chunk, final, now)

    def _finish(
        self, transfer: _Transfer, chunk: BackupChunk, final: Path, now: datetime
    ) -> BackupAck:
        part = transfer.part
        try:
            size = part.stat().st_size
            if size != transfer.size:
                reason = f"{size} bytes arrived, {transfer.size} announced"
                return self._refuse(chunk, part, reason, now)
            actual = file_sha256(part)
            if actual != transfer.sha256:
                return self._refuse(chunk, part, f"SHA-256 {actual} is not the announced one", now)
            with part.open("rb+") as handle:
                os.fsync(handle.fileno())
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            manifest_tmp = final.parent / f".{final.name}.json.tmp"
            manifest_tmp.write_text(self._manifest_json(chunk.manifest), encoding="utf-8")
            os.replace(part, final)
            os.replace(manifest_tmp, final.with_name(final.name + ".json"))
            fsync_directory(final.parent)
        except OSError as exc:
            part.unlink(missing_ok=True)
            log.error("backup %s of %s could not be stored: %s", chunk.name, chunk.device_id, exc)
            return self._ack(chunk, False, "HQ could not store it", now)
        self.stored += 1
        log.info("stored backup %s of %s (%d bytes)", final.name, chunk.device_id, transfer.size)
        self.rotate(final.parent)
        return self._ack(chunk, True, "", now)

    def _refuse(self, chunk: BackupChunk, part: Path, reason: str, now: datetime) -> BackupAck:
        part.unlink(missing_ok=True)
        self.refused += 1
        log.warning("refused backup %s of %s: %s", chunk.name, chunk.device_id, reason)
        return self._ack(chunk, False, reason[:256], now)

    @staticmethod
    def refusal(chunk: BackupChunk, reason: str, at: datetime) -> BackupAck:
        return BackupStore._ack(chunk, False, reason, at)

    @staticmethod
    def _ack(chunk: BackupChunk, ok: bool, reason: str, at: datetime) -> BackupAck:
        return BackupAck(
            device_id=chunk.device_id,
            name=chunk.name,
            sha256=chunk.sha256,
            ok=ok,
            reason=reason,
            at=at,
        )

    @staticmethod
    def _manifest_json(manifest: BackupManifest) -> str:
        body = manifest.model_dump(mode="json")
        return json.dumps(body, indent=2, sort_keys=True)

    def _holds(self, final: Path, sha256: str) -> bool:
        manifest = final.with_name(final.name + ".json")
        if not (final.exists() and manifest.exists()):
            return False
        try:
            return bool(json.loads(manifest.read_text(encoding="utf-8")).get("sha256") == sha256)
        except (OSError, ValueError):
            return False

    def backups(self, store_id: str, device_id: str) -> list[StoredBackup]:
        """A device's backups at HQ, oldest first."""
        found = []
        directory = self.device_dir(store_id, device_id)
        for manifest in directory.glob(f"*{SUFFIX}.json") if directory.is_dir() else []:
            try:
                parsed = BackupManifest.model_validate_json(manifest.read_bytes())
            except (OSError, ValueError):
                continue
            path = manifest.with_name(parsed.file)
            if path.exists() and manifest.name == parsed.file + ".json":
                found.append(StoredBackup(path, parsed))
        return sorted(found, key=lambda b: b.manifest.created_at)

    def rotate(self, directory: Path) -> list[Path]:
        """Keeps the newest ``keep`` backups in a device's directory; returns those removed."""
        store_id, device_id = directory.parent.name, directory.name
        kept = self.backups(store_id, device_id)
        removed = []
        for old in kept[: -self.keep]:
            old.path.unlink(missing_ok=True)
            old.path.with_name(old.path.name + ".json").unlink(missing_ok=True)
            removed.append(old.path)
        return removed
