"""A test HQ's release desk: wheels of this checkout under another version, and signed bundles.

``build_release`` copies the source tree, sets the version, optionally changes a line (a bug)
or adds a schema migration (what a real release can ship with), and builds the wheel.
``shared_release`` builds each such release once per test run: the test processes of one
run (pytest-xdist workers) take it from a folder they share, the first to need it building
it while the others wait. ``shared_wheelhouse`` gathers the releases' dependencies the same
way, and the ``no_index`` fixture (conftest.py) has every pip a test's update runs install
from it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.lifecycle.update import default_python
from tests.run_shared import made_once

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "edge", "drivers", "kiosk", "hq")

MIGRATION = '''"""release test table"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("release_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("release_probe")
'''


def build_release(
    workdir: Path,
    version: str,
    *,
    patch: dict[str, tuple[str, str]] | None = None,
    migration: bool = False,
) -> Path:
    """The appliance's wheel at ``version``; returns its path."""
    from edge.storage import migrate

    src = workdir / f"src-{version}"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.exists():
            shutil.copy(path, src / name)
    pyproject = src / "pyproject.toml"
    pyproject.write_text(
        re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
    )
    init = src / "edge/__init__.py"
    init.write_text(
        re.sub(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text())
    )
    for rel, (old, new) in (patch or {}).items():
        text = (src / rel).read_text()
        assert old in text, f"{rel} no longer holds {old!r}"
        (src / rel).write_text(text.replace(old, new))
    if migration:
        head = migrate.head_revision()
        versions = src / "edge/storage/migrations/versions"
        (versions / "9999_release_probe.py").write_text(
            MIGRATION.format(revision="9999", down=head)
        )
    out = workdir / f"dist-{version}"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def shared_release(
    tmp_path_factory: pytest.TempPathFactory,
    version: str,
    *,
    patch: dict[str, tuple[str, str]] | None = None,
    migration: bool = False,
) -> Path:
    """:func:`build_release`'s wheel, built once in this test run for the same arguments (the
    checkout does not change while the tests run). Tests only read the wheel."""
    what = json.dumps([version, sorted((patch or {}).items()), migration])
    return made_once(
        tmp_path_factory,
        "releases",
        what,
        lambda build: build_release(build, version, patch=patch, migration=migration),
    )


def shared_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appliance's dependencies as wheels for the interpreter new versions are built on,
    gathered once in this test run (from pip's cache, or the index the first time)."""

    def gather(build: Path) -> Path:
        wheel = shared_release(tmp_path_factory, "1.0.1")  # every release needs the same
        proc = subprocess.run(
            [default_python(), "-m", "pip", "download", "-q", "-d", str(build), str(wheel)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return build

    return made_once(tmp_path_factory, "wheelhouse", default_python(), gather)


def update_key(tmp: Path) -> tuple[Ed25519PrivateKey, Path]:
    """HQ's update key and the public half as the device keeps it."""
    key = Ed25519PrivateKey.generate()
    pub = tmp / "hq-update.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub
