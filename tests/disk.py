"""A full disk, for real: a small tmpfs mounted for a test, and a file that fills it up."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(directory: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (made here), unmounted afterwards; the
    test is skipped where mounting is not permitted (it needs root)."""
    directory.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: a small tmpfs is needed for a real full disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit {done.returncode}"
        pytest.skip(f"mounting a tmpfs is not permitted here ({reason}): needs root")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Writes a file until at most ``leave`` bytes are free on ``disk`` (ENOSPC ends it)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while (free := shutil.disk_usage(disk).free) > leave:
            try:
                os.write(fd, b"\0" * max(4096, min(1 << 20, free - leave)))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free <= max(leave, 4096)
    return filler
