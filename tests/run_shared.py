"""What the test processes of one run (pytest-xdist workers) share: a folder of the run's own,
and things made once in it, the first process to need one making it while the others wait."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def run_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """``name`` in the run's temporary folder, shared by its workers (pytest-xdist gives each
    worker a folder inside the run's own)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def made_once(
    tmp_path_factory: pytest.TempPathFactory, kind: str, what: str, make: Callable[[Path], Path]
) -> Path:
    """``make(folder)``'s result, made once in this test run for the same ``what``."""
    folder = run_folder(tmp_path_factory, kind) / hashlib.sha256(what.encode()).hexdigest()[:16]
    folder.mkdir(exist_ok=True)
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = folder / "made"
        if done.exists():
            return Path(done.read_text())
        build = folder / "build"
        shutil.rmtree(build, ignore_errors=True)  # what a killed worker left half-done
        made = make(build)
        done.write_text(str(made))
        return made
