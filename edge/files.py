"""Files that must survive a power cut: a directory's entries made durable, a file's digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
