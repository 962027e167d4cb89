"""What a careless or hostile technician's ``kiosk update`` meets, run as they type it: an old
signed bundle, one over the size limit, a damaged or foreign file, a device without a
config.toml, an update that rolls back, the version already running. Every refusal is one
line, and the device is exactly as it was: same ``current`` and ``previous``, same database
bytes, a ledger that verifies."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app import AppContext
from edge.config import KioskConfig
from edge.lifecycle.update import (
    BundleOffer,
    InstallRoot,
    UpdateRefused,
    queue_update,
    receive_update,
)
from edge.security.bundle import build_bundle
from edge.services import members, points
from hq.commands import sign_command, update_command
from tests.cli_runner import Ran, run_kiosk
from tests.lifecycle.releases import shared_release, update_key

DEVICE = "K001"  # the default device id of a device without config.toml


@dataclass
class Device:
    """A device's data directory and install root, and HQ's keys it trusts."""

    data: Path
    root: Path
    update_key: Ed25519PrivateKey
    update_pub: Path
    command_key: Ed25519PrivateKey
    work: Path

    def kiosk(self, *args: str) -> Ran:
        """``kiosk ARGS`` as the technician types it, in this process (the installs and
        health checks it runs are processes of their own)."""
        return run_kiosk("--data-dir", str(self.data), *args, drop_env=("KIOSK_",))

    def update(self, *args: str) -> Ran:
        return self.kiosk(
            "update",
            *args,
            "--install-root",
            str(self.root),
            "--public-key",
            str(self.update_pub),
            "--health-timeout",
            "300",
        )

    def installed(self, current: str | None, previous: str | None = None) -> None:
        """Versions in place as an earlier installer left them (a stand-in ``kiosk`` each)."""
        root = InstallRoot(self.root)
        for version in filter(None, (current, previous)):
            kiosk = root.versions / version / "bin/kiosk"
            kiosk.parent.mkdir(parents=True, exist_ok=True)
            kiosk.write_text(f"#!/bin/sh\necho 'kiosk, version {version}'\n")
            kiosk.chmod(0o755)
        if previous is not None:
            root.switch(root.previous, previous)
        if current is not None:
            root.switch(root.current, current)

    def state(self) -> tuple[object, ...]:
        """What a refusal must leave as it was: the links, the versions, the database bytes."""
        root = InstallRoot(self.root)
        versions = sorted(p.name for p in root.versions.iterdir()) if root.versions.is_dir() else []
        db = hashlib.sha256()
        for name in ("kiosk.db", "kiosk.db-wal"):
            if (self.data / name).exists():
                db.update((self.data / name).read_bytes())
        return (
            root.version_of(root.current),
            root.version_of(root.previous),
            versions,
            db.hexdigest(),
        )

    def ledger_verifies(self) -> None:
        proc = self.kiosk("ledger", "verify")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def bundle(self, version: str, wheel: Path | None = None, pad: int = 0) -> Path:
        """A bundle HQ signed; without ``wheel`` a tiny one (``pad`` random bytes in it),
        enough for every check before an install."""
        if wheel is None:
            wheel = (
                self.work / f"w-{version}-{pad}" / f"member_center_kiosk-{version}-py3-none-any.whl"
            )
            wheel.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
                z.writestr("edge_probe.py", f"version = {version!r}\n")
                if pad:
                    z.writestr("padding.bin", os.urandom(pad))
        out = self.work / f"member-kiosk-{version}-{pad}.tar"
        build_bundle([wheel], version, self.update_key, out)
        return out

    def allowance(self, bundle: Path, source: str, target: str, **changed: object) -> str:
        """HQ's rollback allowance as ``kiosk hq update --allow-downgrade-from`` signs it;
        ``changed`` forges one (another ``key``, ``device``, ``sha256``, ``ttl``)."""
        key = changed.get("key", self.command_key)
        assert isinstance(key, Ed25519PrivateKey)
        sha256 = changed.get("sha256", hashlib.sha256(bundle.read_bytes()).hexdigest())
        ttl = changed.get("ttl", timedelta(hours=1))
        assert isinstance(sha256, str) and isinstance(ttl, timedelta)
        args: dict[str, str | int | bool] = {
            "from_version": source,
            "to_version": target,
            "sha256": sha256,
        }
        device = str(changed.get("device", DEVICE))
        now = datetime.now(UTC) - (timedelta(days=2) if ttl < timedelta(0) else timedelta(0))
        signed = sign_command(key, device, "allow_rollback", args, abs(ttl), now)
        return signed.to_bytes().decode()


def make_device(tmp_path: Path) -> Device:
    data = tmp_path / "data"
    app = AppContext.open(data, config=KioskConfig())
    card = members.register_member(app, "13800138000", True).card_no
    points.accrue_purchase(app, card, 88_800, "R-1")
    app.close()
    work = tmp_path / "hq"
    work.mkdir()
    key, pub = update_key(work)
    (data / "keys").mkdir(exist_ok=True)
    (data / "keys" / "hq-update.pub").write_bytes(pub.read_bytes())
    command_key = Ed25519PrivateKey.generate()
    (data / "keys" / "hq-command.pub").write_bytes(
        command_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Device(data, tmp_path / "opt", key, pub, command_key, work)


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return make_device(tmp_path)


def refused_in_one_line(proc: Ran) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "internal error" not in lines[0] and "\\n" not in lines[0], lines[0]
    return lines[0]


# -- 1. an older signed bundle ------------------------------------------------------------


def test_an_older_signed_bundle_is_refused_without_hqs_allowance(device):
    device.installed("0.3.1", previous="0.3.0")
    before = device.state()
    line = refused_in_one_line(device.update(str(device.bundle("0.2.9"))))
    assert "0.2.9 is older than the running 0.3.1" in line
    assert "--allow-downgrade-from 0.3.1" in line
    assert device.state() == before
    device.ledger_verifies()


def test_versions_are_compared_as_versions_not_as_text(device):
    """0.10.0 is newer than 0.9.0, though "0.10.0" < "0.9.0" as text: it is not refused as a
    downgrade (the tiny bundle then fails to install, which is another matter)."""
    device.installed("0.9.0")
    proc = device.update(str(device.bundle("0.10.0")))
    assert "older than" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "forged",
    ["another-key", "another-device", "another-step", "another-bundle", "expired", "garbled"],
)
def test_a_rollback_allowance_hq_did_not_give_for_exactly_this_is_refused(device, forged):
    device.installed("0.3.1", previous="0.3.0")
    bundle = device.bundle("0.2.9")
    allowance = {
        "another-key": lambda: device.allowance(
            bundle, "0.3.1", "0.2.9", key=Ed25519PrivateKey.generate()
        ),
        "another-device": lambda: device.allowance(bundle, "0.3.1", "0.2.9", device="K002"),
        "another-step": lambda: device.allowance(bundle, "0.3.0", "0.2.9"),
        "another-bundle": lambda: device.allowance(bundle, "0.3.1", "0.2.9", sha256="0" * 64),
        "expired": lambda: device.allowance(bundle, "0.3.1", "0.2.9", ttl=-timedelta(hours=1)),
        "garbled": lambda: "{not json",
    }[forged]()
    before = device.state()
    queue_update(bundle, device.data, allowance=allowance)
    proc = device.update("--inbox")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    assert "refused: downgrade: 0.2.9 is older than the running 0.3.1" in line
    assert "HQ's rollback allowance" in line
    assert device.state() == before
    assert not list((device.data / "updates/inbox").iterdir())
    assert not list((device.data / "updates/allowances").iterdir())
    device.ledger_verifies()


class _Downloads:
    """HQ's download server on 127.0.0.1 for one directory."""

    def __init__(self, root: Path) -> None:
        handler = type(
            "Handler",
            (http.server.SimpleHTTPRequestHandler,),
            {
                "__init__": lambda s, *a, **k: http.server.SimpleHTTPRequestHandler.__init__(
                    s, *a, directory=str(root), **k
                ),
                "log_message": lambda s, *a: None,
            },
        )
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def downloads(device) -> Iterator[_Downloads]:
    server = _Downloads(device.work)
    yield server
    server.close()


def test_the_agent_fetches_nothing_older_without_hqs_allowance(device, downloads):
    bundle = device.bundle("0.2.9")
    command = update_command(device.command_key, DEVICE, bundle, downloads.url(bundle.name))
    offer = BundleOffer.from_args(command.args, KioskConfig().sync.update_max_bytes)
    with pytest.raises(UpdateRefused) as err:
        receive_update(
            offer, device.data, device.update_key.public_key(), running_version="0.3.1",
            timeout_s=30,
        )  # fmt: skip
    assert err.value.code == "downgrade"
    assert "0.2.9 is older than the running 0.3.1" in err.value.message
    # an allowance of another step is refused the same way; neither fetched anything
    other = update_command(
        device.command_key, DEVICE, bundle, downloads.url(bundle.name),
        allow_downgrade_from="0.3.0",
    )  # fmt: skip
    offer = BundleOffer.from_args(other.args, KioskConfig().sync.update_max_bytes)
    with pytest.raises(UpdateRefused) as err:
        receive_update(
            offer, device.data, device.update_key.public_key(), running_version="0.3.1",
            timeout_s=30,
        )  # fmt: skip
    assert "allows 0.3.0 to 0.2.9, not 0.3.1 to 0.2.9" in err.value.message
    assert not (device.data / "updates/inbox").exists()


# -- real installs: releases of this checkout under other versions ------------------------


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    return {
        "1.0.1": shared_release(tmp_path_factory, "1.0.1"),
        # migrates the database and calls a camera API that does not exist: its doctor fails
        "1.0.3": shared_release(
            tmp_path_factory,
            "1.0.3",
            patch={
                "drivers/factory.py": ("return SimulatedCamera(", "return SimulatedCamera.open(")
            },
            migration=True,
        ),
    }


@pytest.mark.slow
def test_a_rollback_hq_allowed_installs_once(device, downloads, releases, no_index):
    device.installed("1.0.2")
    bundle = device.bundle("1.0.1", releases["1.0.1"])
    # HQ: kiosk hq update K001 BUNDLE --url URL --allow-downgrade-from 1.0.2; the agent
    # fetches, checks and queues it with the allowance, as it does on HQ's command
    command = update_command(
        device.command_key, DEVICE, bundle, downloads.url(bundle.name),
        allow_downgrade_from="1.0.2",
    )  # fmt: skip
    offer = BundleOffer.from_args(command.args, KioskConfig().sync.update_max_bytes)
    receive_update(
        offer, device.data, device.update_key.public_key(), running_version="1.0.2",
        timeout_s=60,
    )  # fmt: skip
    proc = device.update("--inbox", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)
    assert (row["status"], row["version"], row["previous"]) == ("installed", "1.0.1", "1.0.2")
    assert row["rollback_allowance"]
    root = InstallRoot(device.root)
    assert (root.version_of(root.current), root.version_of(root.previous)) == ("1.0.1", "1.0.2")
    device.ledger_verifies()
    # the same allowance again, once 1.0.2 is back (a replay): refused
    device.installed("1.0.2", previous="1.0.1")
    before = device.state()
    queue_update(bundle, device.data, allowance=str(command.args["rollback_allowance"]))
    proc = device.update("--inbox")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rollback allowance was used already" in proc.stdout
    assert device.state() == before


# -- 2. one size limit for every way in ---------------------------------------------------


def test_a_bundle_over_the_size_limit_is_refused_every_way_in(device):
    (device.data / "config.toml").write_text("[sync]\nupdate_max_bytes = 1048576\n")
    device.installed("0.3.1", previous="0.3.0")
    big = device.bundle("0.3.2", pad=3 * 1024 * 1024)
    size = big.stat().st_size
    before = device.state()
    # by hand
    line = refused_in_one_line(device.update(str(big)))
    assert f"is {size} bytes, more than the 1048576 allowed (sync.update_max_bytes)" in line
    assert device.state() == before
    # from the inbox
    queue_update(big, device.data)
    proc = device.update("--inbox")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (row,) = proc.stdout.strip().splitlines()
    assert "refused: bundle_too_large" in row and "more than the 1048576 allowed" in row
    assert device.state() == before
    # HQ's command: the same check, before anything is fetched
    with pytest.raises(UpdateRefused) as err:
        BundleOffer.from_args(
            {"url": "http://hq.invalid/b.tar", "sha256": "0" * 64, "size": size,
             "version": "0.3.2"},
            1048576,
        )  # fmt: skip
    assert err.value.code == "bundle_too_large"
    assert "more than the 1048576 allowed (sync.update_max_bytes)" in err.value.message
    device.ledger_verifies()


# -- 3. damaged and foreign files ---------------------------------------------------------


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", "{}")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "is damaged or incomplete"),
        ("random", "is not an update bundle (not a tar archive)"),
        ("text", "is not an update bundle (not a tar archive)"),
        ("empty", "is not an update bundle (not a tar archive)"),
        ("zip", "is not an update bundle (not a tar archive)"),
        ("gzip", "is not an update bundle (not a tar archive)"),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_in_one_line(device, kind, expected):
    device.installed("0.3.1", previous="0.3.0")
    path = device.work / f"{kind}.tar"
    if kind == "truncated":
        whole = device.bundle("0.3.2", pad=256 * 1024).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(5000))
    elif kind == "text":
        path.write_text("member-kiosk 0.3.2\nplease install\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip":
        _zip(path)
    else:
        path.write_bytes(gzip.compress(b"not a tar, only text\n" * 50))
    before = device.state()
    line = refused_in_one_line(device.update(str(path)))
    assert line.startswith(f"error: {path.name} {expected}"), line
    assert device.state() == before
    device.ledger_verifies()


# -- 4. a device without config.toml ------------------------------------------------------


@pytest.mark.slow
def test_a_device_without_config_toml_is_checked_with_its_defaults(device, releases, no_index):
    assert not (device.data / "config.toml").exists()
    device.installed("1.0.0")
    proc = device.update(str(device.bundle("1.0.1", releases["1.0.1"])))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "member-kiosk-1.0.1-0.tar: installed 1.0.1"
    root = InstallRoot(device.root)
    assert (root.version_of(root.current), root.version_of(root.previous)) == ("1.0.1", "1.0.0")
    device.ledger_verifies()


# -- 5. a rolled-back update keeps the older version as the rollback target ---------------


@pytest.mark.slow
def test_a_rolled_back_update_leaves_previous_on_the_older_version(device, releases, no_index):
    device.installed("1.0.2", previous="1.0.1")
    ledger_before = device.kiosk("--json", "ledger", "verify")
    proc = device.update(str(device.bundle("1.0.3", releases["1.0.3"])))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("member-kiosk-1.0.3-0.tar: rolled_back 1.0.3"), proc.stdout
    assert "problem: scanner:" in proc.stdout, proc.stdout  # 1.0.3's own fault, not the setup's
    root = InstallRoot(device.root)
    assert (root.version_of(root.current), root.version_of(root.previous)) == ("1.0.2", "1.0.1")
    assert sorted(p.name for p in root.versions.iterdir()) == ["1.0.1", "1.0.2"]
    # the weekly clean-up keeps both: the running version and its rollback target
    cleanup = device.kiosk("cleanup", "--install-root", str(device.root))
    assert cleanup.returncode == 0, cleanup.stderr
    assert cleanup.stdout.startswith("removed 0 old versions"), cleanup.stdout
    assert sorted(p.name for p in root.versions.iterdir()) == ["1.0.1", "1.0.2"]
    # the migrated database was put back: the same ledger, and it verifies
    assert device.kiosk("--json", "ledger", "verify").stdout == ledger_before.stdout
    device.ledger_verifies()


# -- 6. the version already current -------------------------------------------------------


def test_the_version_already_current_is_said_in_one_line(device):
    device.installed("0.3.1", previous="0.3.0")
    before = device.state()
    proc = device.update(str(device.bundle("0.3.1")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "member-kiosk-0.3.1-0.tar: 0.3.1 is already the current version"
    assert proc.stderr == ""
    assert device.state() == before
