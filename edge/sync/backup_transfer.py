"""Sending the newest backup to HQ, chunk by chunk, until HQ says it holds a copy.

The agent's loop calls :meth:`BackupSender.pump` every turn; it publishes at most a few chunks
each time, so the outbox, inbound messages and the watchdog keep their turn while a large
backup goes out. Only the newest backup of ``<data>/backups`` is sent: when it is already
acknowledged there is nothing to do, and an older unsent one is never sent once a newer exists.
HQ's :class:`~edge.protocol.BackupAck` marks the backup's manifest ``delivered_at``; without
an ack within the timeout, or after a reconnect, the backup is sent again from its start (HQ
writes chunks at their offsets, so repeats are harmless).
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import datetime
from pathlib import Path

from edge.domain.errors import IntegrityError
from edge.lifecycle.backup import BackupInfo, list_backups, mark_delivered, read_manifest
from edge.protocol import BACKUP_CHUNK_BYTES, BackupAck, BackupChunk, BackupManifest, Topics
from edge.protocol.link import MqttLink

log = logging.getLogger(__name__)

CHUNKS_PER_TURN = 4
SCAN_EVERY_S = 5.0
RETRY_MAX_S = 600.0


class BackupSender:
    """Ships the newest unacknowledged backup (runs on the agent's thread)."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        device_id: str,
        backup_dir: Path,
        *,
        ack_timeout_s: float,
        chunk_bytes: int = BACKUP_CHUNK_BYTES,
        per_turn: int = CHUNKS_PER_TURN,
    ) -> None:
        self.link = link
        self.topic = topics.backup(device_id)
        self.device_id = device_id
        self.backup_dir = backup_dir
        self.ack_timeout_s = ack_timeout_s
        self.timeout_s = ack_timeout_s
        self.chunk_bytes = chunk_bytes
        self.per_turn = per_turn
        self.current: BackupInfo | None = None
        self.next_index = 0
        self.sent_at = 0.0  # when the last chunk of the current pass went out
        self._next_scan = 0.0
        self.chunks_sent = 0
        self.passes = 0
        self.delivered = 0
        self.refused = 0

    def restart(self) -> None:
        """Send the current backup again from its first chunk (after a reconnect)."""
        self.next_index = 0
        self.sent_at = 0.0
        self._next_scan = 0.0

    def _count(self, info: BackupInfo) -> int:
        return -(-info.size // self.chunk_bytes)

    def _scan(self, now: float) -> None:
        if now < self._next_scan:
            return
        self._next_scan = now + SCAN_EVERY_S
        backups = list_backups(self.backup_dir)
        newest = backups[-1] if backups else None
        if newest is None or newest.delivered_at is not None or newest.device_id != self.device_id:
            self.current = None
            return
        if self.current is None or self.current.path != newest.path:
            if self.current is not None:
                log.info("backup %s superseded by %s", self.current.path.name, newest.path.name)
            self.current = newest
            self.next_index = 0
            self.sent_at = 0.0
            self.timeout_s = self.ack_timeout_s

    def pump(self) -> int:
        """Publishes up to ``per_turn`` chunks of the backup being sent; returns how many."""
        if not self.link.connected:
            return 0
        now = time.monotonic()
        self._scan(now)
        info = self.current
        if info is None:
            return 0
        count = self._count(info)
        if self.next_index >= count:
            if now - self.sent_at < self.timeout_s:
                return 0  # waiting for HQ's ack
            log.info(
                "no ack for backup %s in %.0f s: sending again", info.path.name, self.timeout_s
            )
            self.timeout_s = min(self.timeout_s * 2, RETRY_MAX_S)
            self.next_index = 0
        sent = 0
        try:
            with info.path.open("rb") as handle:
                while sent < self.per_turn and self.next_index < count:
                    handle.seek(self.next_index * self.chunk_bytes)
                    data = handle.read(self.chunk_bytes)
                    message = self._chunk(info, self.next_index, count, data)
                    if not self.link.publish(self.topic, message.to_bytes(), qos=1):
                        break
                    self.next_index += 1
                    sent += 1
        except (OSError, ValueError) as exc:  # rotated away or changed under us
            log.warning("backup %s cannot be sent: %s", info.path.name, exc)
            self.current = None
            self._next_scan = 0.0
            return sent
        self.chunks_sent += sent
        if self.next_index >= count and sent:
            self.sent_at = now
            self.passes += 1
        return sent

    def _chunk(self, info: BackupInfo, index: int, count: int, data: bytes) -> BackupChunk:
        return BackupChunk(
            device_id=self.device_id,
            name=info.path.name,
            sha256=info.sha256,
            size=info.size,
            chunk_bytes=self.chunk_bytes,
            index=index,
            count=count,
            data=base64.b64encode(data).decode(),
            manifest=manifest_message(info),
        )

    def on_ack(self, ack: BackupAck, now: datetime) -> bool:
        """Marks the acknowledged backup delivered; returns whether a manifest was marked."""
        if not ack.ok:
            self.refused += 1
            log.error("HQ refused backup %s: %s", ack.name, ack.reason)
            return False  # sent again when the timeout runs out
        manifest = self.backup_dir / f"{ack.name}.json"
        try:
            info = read_manifest(manifest)
        except IntegrityError:
            return False  # rotated away meanwhile
        if info.sha256 != ack.sha256 or info.delivered_at is not None:
            return False
        mark_delivered(info, now)
        self.delivered += 1
        if self.current is not None and self.current.path == info.path:
            self.current = None
            self.timeout_s = self.ack_timeout_s
        log.info("HQ holds backup %s", ack.name)
        return True


def manifest_message(info: BackupInfo) -> BackupManifest:
    """A backup's manifest as the protocol carries it with every chunk."""
    return BackupManifest(
        file=info.path.name,
        sha256=info.sha256,
        size=info.size,
        created_at=info.created_at,
        store_id=info.store_id,
        device_id=info.device_id,
        ledger_entries=info.ledger_entries,
        members=info.members,
        schema_revision=info.schema_revision,
    )
