"""Files that must survive a power cut: a directory's entries made durable, a file's digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Writes ``path`` whole or not at all: into ``.<name>.tmp`` beside it, flushed to the
    disk, then renamed over it (its folder made first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_directory(directory: Path) -> None:
    """Makes the renames and new files in ``directory`` durable (after ``os.replace``)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks (backups and bundles are large)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
