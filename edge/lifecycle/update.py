"""``kiosk update``: install a signed bundle beside the running version, check it, or roll back.

Layout under the install root (``/opt/member-kiosk`` on the appliance)::

    versions/<version>/   one virtual environment per installed version
    current -> versions/<version>     what the units start (switched atomically)
    previous -> versions/<version>    what a rollback returns to

Steps: verify the bundle's signature and files; install into a new virtual environment
beside the running version (at a lower CPU priority, while the appliance goes on serving: one
update installs at a time, :func:`edge.lifecycle.busy.installing`); wait for the update lock
(no print, dispense or expiry in progress) and keep it to the end; stop the services;
snapshot the database; switch ``current``; run the new version's ``kiosk doctor`` (database,
printer, scanner) with the services still stopped; start the services. An install takes
minutes on a Pi (unpacking the dependencies, compiling their bytecode); prints and dispenses
are held back only from the stop to the start. Every attempt is appended to
``updates/history.jsonl``.

Before any of that a bundle is refused (one line, nothing changed) when it is larger than
``sync.update_max_bytes`` (:func:`check_bundle_size`, the one limit of every way in: ``kiosk
update``, the inbox and HQ's command), is not a complete tar, or holds a version older than
``current`` (:func:`compare_versions`). Going back needs HQ's signed rollback allowance for
exactly that step (:func:`check_rollback`): a ``Command`` named ``allow_rollback``, signed with
HQ's command key, naming this device, the version it leaves, the version it goes to and the
bundle's SHA-256, valid for a day and used once. HQ's ``update`` command carries it
(``kiosk hq update ... --allow-downgrade-from VERSION``); the agent checks it matches the
offer and leaves it in ``updates/allowances/`` beside the bundle it queues.

Why in this order: from the snapshot until the health check's verdict nothing but the new
version's doctor touches the database, so a failed check can put back a database the new
version migrated without losing a sale, a registration or an event HQ acknowledged (with the
services running, as before, anything committed after the snapshot was lost by the restore).
The doctor also needs the serial ports and the camera, which the running app holds
exclusively. Once the services run on the new version the database is theirs: if they then
fail to start, ``current`` goes back but the database is left as it is, and the snapshot is
kept in ``updates/`` for a technician.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.version import InvalidVersion, Version

from edge.config import KioskConfig, load_config
from edge.domain.errors import ConfigError, IntegrityError, KioskError, Refusal
from edge.files import file_sha256, fsync_directory
from edge.lifecycle import busy
from edge.lifecycle.backup import database_path, snapshot
from edge.lifecycle.health import HealthReport, run_health_check
from edge.protocol import COMMAND_SIGNING_DOMAIN, Command, ProtocolError, decode
from edge.security.bundle import UpdateManifest, verify_bundle
from edge.security.keys import load_public_key
from edge.security.signing import verify_bytes
from edge.storage import ledger_lock

log = logging.getLogger(__name__)

UPDATES_DIR = "updates"
INBOX = "inbox"
DOWNLOADS = "downloads"
ALLOWANCES = "allowances"
HISTORY = "history.jsonl"
UPDATE_FAULT = "update"  # telemetry's fault for an update that did not install
ROLLBACK_COMMAND = "allow_rollback"
_MAX_ALLOWANCE = 8 * 1024
UPDATE_KEY_FILE = Path("keys/hq-update.pub")
SERVICES = ("member-kiosk-sync.service", "member-kiosk.service")
SYSTEMCTL = ("systemctl",)


class UpdateFailed(KioskError):
    """The update did not install; the running version is unchanged."""

    code = "update_failed"


class UpdateRefused(Refusal):
    """HQ's update offer was not queued (``code`` says why); nothing was queued."""

    code = "update_refused"


@dataclass(frozen=True)
class UpdateResult:
    """What happened: ``installed``, ``rolled_back``, or ``already_current``.

    ``rollback_allowance``: the transaction of HQ's allowance a rollback installed with."""

    status: str
    version: str
    previous: str | None
    problems: list[str] = field(default_factory=list)
    database_restored: bool = False
    rollback_allowance: str | None = None


def check_bundle_size(size: int, max_bytes: int, name: str = "the bundle") -> None:
    """The one size limit of every way a bundle comes in (``sync.update_max_bytes``).

    Raises:
        UpdateRefused: ``bundle_too_large``.
    """
    if size > max_bytes:
        raise UpdateRefused(
            f"{name} is {size} bytes, more than the {max_bytes} allowed (sync.update_max_bytes)",
            code="bundle_too_large",
        )


def compare_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b`` (PEP 440: ``0.4.0rc1``
    comes before ``0.4.0``); ``None`` when they cannot be ordered (an unordered version is
    treated as a downgrade: it needs HQ's allowance)."""
    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion:
        return None
    return (va > vb) - (va < vb)


def _older(target: str, running: str) -> bool:
    """Whether going from ``running`` to ``target`` is a downgrade (or cannot be told)."""
    order = compare_versions(target, running)
    return order is None or order < 0


def _downgrade(running: str, target: str, device_id: str, why: str = "") -> UpdateRefused:
    order = compare_versions(target, running)
    what = (
        f"{target} is older than the running {running}"
        if order is not None
        else f"cannot tell whether {target} is newer than the running {running}"
    )
    return UpdateRefused(
        f"{what}{why}: not installed; a rollback installs only with HQ's signed allowance "
        f"(at HQ: kiosk hq update {device_id} BUNDLE --url URL --allow-downgrade-from {running})",
        code="downgrade",
    )


def _read_allowance(raw: str) -> Command | None:
    if len(raw) > _MAX_ALLOWANCE:
        return None
    try:
        command = decode(Command, raw.encode())
    except ProtocolError:
        return None
    return command if command.command == ROLLBACK_COMMAND else None


def _binding_problem(allowance: Command | None, running: str, target: str, sha256: str) -> str:
    """What keeps ``allowance`` from naming exactly this step (empty: nothing)."""
    if allowance is None:
        return "is not a rollback allowance"
    args = allowance.args
    allowed = (args.get("from_version"), args.get("to_version"))
    if allowed != (running, target):
        return f"allows {allowed[0]} to {allowed[1]}, not {running} to {target}"
    if args.get("sha256") != sha256:
        return "names another bundle"
    return ""


def check_rollback(
    raw: str | None,
    *,
    running: str,
    target: str,
    sha256: str,
    device_id: str,
    public_key: Ed25519PublicKey | None,
    now: datetime,
    used: Sequence[str] = (),
) -> str:
    """The transaction of HQ's allowance when ``raw`` allows exactly going from ``running``
    to ``target`` with the bundle ``sha256`` on ``device_id``: signed with HQ's command key
    (``public_key``), not expired, not ``used`` before.

    Raises:
        UpdateRefused: ``downgrade``, one line naming both versions and what to do.
    """
    if raw is None:
        raise _downgrade(running, target, device_id)
    allowance = _read_allowance(raw)
    problem = _binding_problem(allowance, running, target, sha256)
    if not problem and allowance is not None:
        if public_key is None or not verify_bytes(
            public_key,
            COMMAND_SIGNING_DOMAIN,
            allowance.signed_bytes(),
            allowance.signature_bytes(),
        ):
            problem = "is not signed with HQ's command key"
        elif allowance.device_id != device_id:
            problem = f"is for device {allowance.device_id}"
        elif allowance.expires_at <= now:
            problem = f"expired at {allowance.expires_at.isoformat()}"
        elif allowance.transaction in used:
            problem = "was used already"
    if problem or allowance is None:
        raise _downgrade(running, target, device_id, f", and HQ's rollback allowance {problem}")
    return allowance.transaction


@dataclass(frozen=True)
class InstallRoot:
    """The directory tree of installed versions."""

    path: Path

    @property
    def versions(self) -> Path:
        return self.path / "versions"

    @property
    def current(self) -> Path:
        return self.path / "current"

    @property
    def previous(self) -> Path:
        return self.path / "previous"

    @property
    def install_lock(self) -> Path:
        """Held by the one update installing (:func:`edge.lifecycle.busy.installing`)."""
        return self.path / ".install.lock"

    def version_of(self, link: Path) -> str | None:
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def switch(self, link: Path, version: str) -> None:
        """Point ``link`` at ``versions/<version>`` in one rename (readers never see a gap)."""
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(Path("versions") / version, tmp)
        os.replace(tmp, link)
        fsync_directory(self.path)


SYSTEM_PYTHON = Path("/usr/bin/python3")
# how much lower than the app's the priority of an install's pip and compiler is
INSTALL_NICENESS = 10
# how long an update waits for another one to finish installing (minutes on a Pi), within
# member-kiosk-update.service's TimeoutStartSec
INSTALL_WAIT_S = 1200.0


def default_python(system: Path = SYSTEM_PYTHON) -> str:
    """The interpreter new versions are built on: the system's (its site-packages hold
    picamera2 and lgpio on a Pi) where it is this Python's version and can make environments
    (``python3-pip`` or ``python3-venv``), as on the appliance; otherwise this interpreter's
    own base (a machine whose ``python3`` is another version, or has neither).

    Another installation of the same version (pyenv's, say) is passed over for the system's:
    its site-packages are whatever that machine holds (thousands of modules on some), which
    every new version would see and compile bytecode for."""
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if system.exists() and system.resolve().name == here and _can_make_environments(system):
        return str(system)
    return str(getattr(sys, "_base_executable", sys.executable))


def _can_make_environments(python: Path) -> bool:
    """Whether ``python`` can give a new environment its packages: its pip installs into
    another one, or its ``ensurepip`` (Debian's ``python3-venv``) gives the new one a pip."""
    if pip_from_outside(str(python)):
        return True
    try:
        probe = [str(python), "-c", "import ensurepip"]
        return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache  # asked when choosing the interpreter and again when installing
def pip_from_outside(python: str) -> bool:
    """Whether ``python``'s own pip can install into another environment (``--python``, pip
    22.3 and later; Debian's ``python3-pip`` is 23.0). A new version's environment is then made
    without a pip of its own: ``ensurepip`` unpacks and compiles pip into every version,
    seconds on a desktop and more on the device, for a tool the version never runs. Asked
    once per process and interpreter (starting its pip takes a second on a Pi)."""
    try:
        proc = subprocess.run(
            [python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    found = re.match(r"pip (\d+)\.(\d+)", proc.stdout)
    return proc.returncode == 0 and found is not None and (int(found[1]), int(found[2])) >= (22, 3)


def install_version(
    manifest: UpdateManifest,
    wheels: Path,
    root: InstallRoot,
    *,
    python: str,
    system_site_packages: bool = True,
    timeout: float = 1800.0,
) -> Path:
    """A new virtual environment for ``manifest.version`` with its wheel installed.

    Raises:
        UpdateFailed: the environment could not be made or pip failed (nothing left behind).
    """
    target = root.versions / manifest.version
    if target.exists():  # a half-finished earlier attempt, or a version being reinstalled
        shutil.rmtree(target)
    root.versions.mkdir(parents=True, exist_ok=True)
    outside = pip_from_outside(python)
    venv = [
        python,
        "-m",
        "venv",
        *(["--without-pip"] if outside else []),
        *(["--system-site-packages"] if system_site_packages else []),
    ]
    runs_pip = (
        [python, "-m", "pip", "--python", str(target / "bin/python")]
        if outside
        else [str(target / "bin/python"), "-m", "pip"]
    )
    pip = [
        *runs_pip,
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",  # the bytecode step below compiles, on every core
        "--find-links",
        str(wheels),
        *(["--no-index"] if manifest.complete else []),
        str(wheels / manifest.wheel),
    ]
    for step in ([*venv, str(target)], pip):
        try:
            proc = subprocess.run(_gently(step), capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise UpdateFailed(f"installing {manifest.version}: {exc}") from None
        if proc.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            tail = (proc.stderr or proc.stdout).strip()[-800:]
            raise UpdateFailed(f"installing {manifest.version} failed: {tail}")
    # the bytecode every process reads, the touchscreen's optimized one among it (the services
    # cannot write it): without it the version still runs, only compiling at every start
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            _gently([str(target / "bin/python"), "-m", "edge.lifecycle.bytecode"]),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    (target / "update-manifest.json").write_text(
        json.dumps(asdict(manifest), indent=2, sort_keys=True), encoding="utf-8"
    )
    return target


def _gently(command: list[str]) -> list[str]:
    """``command`` at a lower CPU priority: an install runs while the touchscreen serves."""
    nice = shutil.which("nice")
    return [nice, "-n", str(INSTALL_NICENESS), *command] if nice else command


def _schema_revision(db: Path) -> str | None:
    import sqlite3

    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        conn.close()
    return str(row[0]) if row else None


def _same_owner(path: Path, like: Path) -> None:
    if os.geteuid() == 0:
        st = like.stat()
        os.chown(path, st.st_uid, st.st_gid)


def _put_back_database(saved: Path, live: Path, wait_s: float) -> bool:
    """Return the database to the snapshot taken under the update lock (nothing ran since).

    Like a restore, only while no process has the file open (the ledger's lock, held
    exclusively: a console command that opened it meanwhile is waited for, and none opens it
    until this is done); False, and nothing touched, if one kept it open for ``wait_s``.
    """
    hold = ledger_lock.try_exclusive(live, wait_s)
    if hold is None:
        return False
    try:
        for suffix in ("-wal", "-shm"):
            live.with_name(live.name + suffix).unlink(missing_ok=True)
        tmp = live.with_name(f".{live.name}.rollback")
        shutil.copyfile(saved, tmp)
        _same_owner(tmp, live.parent)
        os.replace(tmp, live)
        fsync_directory(live.parent)
    finally:
        hold.release()
    return True


def _run(command: Sequence[str], timeout: float) -> str | None:
    """``None`` when the command succeeded, else what went wrong."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}"
    if proc.returncode != 0:
        return f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return None


def _record(data_dir: Path, entry: dict[str, object]) -> None:
    log = data_dir / UPDATES_DIR / HISTORY
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# what queue_update names a bundle the agent downloaded for HQ's command (its version checked
# against the manifest before it was queued)
_QUEUED_NAME = re.compile(r"^\d{8}T\d{12}Z-member-kiosk-([0-9A-Za-z][0-9A-Za-z.+_-]{0,63})\.tar$")
_TAIL = 16 * 1024


def update_fault(data_dir: Path) -> str | None:
    """The fault telemetry reports while the newest attempt in ``updates/history.jsonl`` did
    not install: ``update:rolled_back:<version>:<started>`` (installed, then put back by the
    health check or a failed start) or ``update:refused:<version>:<started>`` (the installer
    refused or could not install it), ``<started>`` the attempt's start (UTC,
    ``2026-12-08T10:15:00Z``). HQ's rollouts read it (:mod:`hq.rollouts`); the next attempt
    that installs clears it. ``None`` when the newest attempt installed, or there is none.
    """
    log = data_dir / UPDATES_DIR / HISTORY
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - _TAIL))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    try:
        entry = json.loads(lines[-1]) if lines else {}
        started = datetime.fromisoformat(str(entry.get("at"))).astimezone(UTC)
    except (ValueError, AttributeError, TypeError):
        return None
    status = entry.get("status")
    if status not in ("rolled_back", "refused"):
        return None
    version = entry.get("version")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        # a refused bundle's version, when it came from HQ, is in the name it was queued by
        named = _QUEUED_NAME.match(str(entry.get("bundle", "")))
        version = named[1] if named else "unknown"
    return f"{UPDATE_FAULT}:{status}:{version}:{started:%Y-%m-%dT%H:%M:%SZ}"


def apply_update(
    bundle: Path,
    *,
    data_dir: Path,
    install_root: Path,
    public_key: Ed25519PublicKey,
    config: KioskConfig | None = None,
    config_path: Path | None = None,
    python: str | None = None,
    system_site_packages: bool = True,
    services: Sequence[str] = (),
    systemctl: Sequence[str] = SYSTEMCTL,
    health_timeout: float = 120.0,
    lock_timeout: float | None = 600.0,
    now: datetime | None = None,
    allowance: str | None = None,
) -> UpdateResult:
    """Install ``bundle`` if HQ signed it; keep it only if the new version proves healthy.

    This is what HQ's ``update`` command runs (via :func:`queue_update` when the caller lacks
    the rights to write the install root and restart services).

    Args:
        services: the units to stop for the switch and start after it (empty: none).
        systemctl: the command that stops and starts them (``systemctl``).
        lock_timeout: how long to wait for work in progress; ``None`` waits for ever.
        allowance: HQ's signed rollback allowance (see :func:`check_rollback`), needed only
            when the bundle's version is older than ``current``'s.

    Raises:
        UpdateRefused: larger than ``sync.update_max_bytes``, or older than ``current``
            without HQ's allowance (nothing changed).
        IntegrityError: the bundle is not signed by HQ or is damaged (nothing changed).
        LockTimeout: the appliance stayed busy (nothing changed).
        UpdateFailed: the new version could not be installed (nothing changed).
    """
    root = InstallRoot(install_root)
    if config is None:
        config, config_path = load_config(config_path, data_dir)
        if not config_path.exists():  # no file: the device runs on the defaults
            config_path = None
    at = now or datetime.now(UTC)
    started = at.isoformat()
    with contextlib.suppress(OSError):  # one that cannot be read is refused by verify_bundle
        check_bundle_size(bundle.stat().st_size, config.sync.update_max_bytes, bundle.name)
    with tempfile.TemporaryDirectory(prefix="kiosk-update-") as tmp:
        manifest = verify_bundle(bundle, public_key, Path(tmp) / "wheels")
        with busy.installing(root.install_lock, timeout=INSTALL_WAIT_S):
            previous = root.version_of(root.current)
            same = previous is not None and (
                previous == manifest.version or compare_versions(manifest.version, previous) == 0
            )
            if same and (root.current / "bin/kiosk").exists():
                return UpdateResult("already_current", manifest.version, previous)
            used_allowance = None
            if previous is not None and _older(manifest.version, previous):
                used_allowance = check_rollback(
                    allowance,
                    running=previous,
                    target=manifest.version,
                    sha256=file_sha256(bundle),
                    device_id=config.device.device_id,
                    public_key=_command_key(config, data_dir),
                    now=at,
                    used=_allowances_used(data_dir),
                )
            # beside the running version, which goes on serving customers meanwhile
            new = install_version(
                manifest,
                Path(tmp) / "wheels",
                root,
                python=python or default_python(),
                system_site_packages=system_site_packages,
            )
            with contextlib.ExitStack() as switching:
                try:  # the switch waits until no print, dispense or expiry is in progress
                    switching.enter_context(busy.exclusive(data_dir, timeout=lock_timeout))
                except busy.LockTimeout:
                    if manifest.version not in (previous, root.version_of(root.previous)):
                        shutil.rmtree(new, ignore_errors=True)  # nothing changed
                    raise
                control = _Services(tuple(services), tuple(systemctl), health_timeout)
                if failure := control.stop():
                    control.start()  # whatever did stop runs the unchanged version again
                    shutil.rmtree(new, ignore_errors=True)
                    result = UpdateResult("rolled_back", manifest.version, previous, [failure])
                else:
                    result = _switch_and_check(
                        root, manifest, new, previous, config, data_dir, config_path, control, tmp
                    )
    if used_allowance is not None and result.status == "installed":
        result = replace(result, rollback_allowance=used_allowance)
    _record(data_dir, {"at": started, "bundle": bundle.name, **asdict(result)})
    return result


def _command_key(config: KioskConfig, data_dir: Path) -> Ed25519PublicKey | None:
    """HQ's command key, which signs rollback allowances (``sync.command_public_key``)."""
    path = Path(config.sync.command_public_key)
    try:
        return load_public_key(path if path.is_absolute() else data_dir / path)
    except ConfigError:
        return None


def _allowances_used(data_dir: Path) -> list[str]:
    """The rollback allowances installed with before (from ``updates/history.jsonl``)."""
    log = data_dir / UPDATES_DIR / HISTORY
    used = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        with contextlib.suppress(ValueError, AttributeError):
            entry = json.loads(line)
            if entry.get("status") == "installed" and entry.get("rollback_allowance"):
                used.append(str(entry["rollback_allowance"]))
    return used


@dataclass(frozen=True)
class _Services:
    """The appliance's units, stopped for the switch and started after it."""

    units: tuple[str, ...]
    systemctl: tuple[str, ...]
    timeout: float

    def stop(self) -> str | None:
        return _run([*self.systemctl, "stop", *self.units], self.timeout) if self.units else None

    def start(self) -> str | None:
        return _run([*self.systemctl, "start", *self.units], self.timeout) if self.units else None


def _switch_and_check(
    root: InstallRoot,
    manifest: UpdateManifest,
    new: Path,
    previous: str | None,
    config: KioskConfig,
    data_dir: Path,
    config_path: Path | None,
    services: _Services,
    tmp: str,
) -> UpdateResult:
    """With the services stopped: snapshot, switch, check; then start on the version kept."""
    live = database_path(config, data_dir)
    saved = Path(tmp) / "pre-update.db"
    revision_before = _schema_revision(live)
    if live.exists():
        snapshot(live, saved)
    older = root.version_of(root.previous)  # put back if the new version is not kept
    if previous is not None:
        root.switch(root.previous, previous)
    root.switch(root.current, manifest.version)
    report: HealthReport = run_health_check(
        new / "bin/kiosk", data_dir, config_path=config_path, timeout=services.timeout
    )
    if report.problems:
        # nothing but the doctor has run on the database since the snapshot: put it back
        restored = False
        problems = _switch_back(root, manifest, previous, older, report.problems)
        if saved.exists() and _schema_revision(live) != revision_before:
            restored = _put_back_database(saved, live, services.timeout)
            if not restored:
                kept = data_dir / UPDATES_DIR / f"pre-{manifest.version}.db"
                shutil.copyfile(saved, kept)
                problems.append(
                    f"the database was kept open by another process: not put back; "
                    f"the copy from before the update is {kept}"
                )
        if previous is not None and (failure := services.start()):
            problems.append(f"start after rollback: {failure}")
        return UpdateResult("rolled_back", manifest.version, previous, problems, restored)
    if not (failure := services.start()):
        return UpdateResult("installed", manifest.version, previous)
    # The new version's services may have written to the database: it stays as it is.
    problems = [f"start: {failure}"]
    services.stop()
    if saved.exists() and _schema_revision(live) != revision_before:
        kept = data_dir / UPDATES_DIR / f"pre-{manifest.version}.db"
        shutil.copyfile(saved, kept)
        problems.append(
            f"the database stays as {manifest.version} migrated it; "
            f"the copy from before the update is {kept}"
        )
    problems = _switch_back(root, manifest, previous, older, problems)
    if previous is not None and (failure := services.start()):
        problems.append(f"start after rollback: {failure}")
    return UpdateResult("rolled_back", manifest.version, previous, problems)


def _switch_back(
    root: InstallRoot,
    manifest: UpdateManifest,
    previous: str | None,
    older: str | None,
    problems: list[str],
) -> list[str]:
    """``current`` back to ``previous`` and ``previous`` back to ``older`` (the rollback
    target before this attempt, which ``kiosk cleanup`` must keep), the new version removed."""
    if previous is not None:
        root.switch(root.current, previous)
    else:
        root.current.unlink(missing_ok=True)
    shutil.rmtree(root.versions / manifest.version, ignore_errors=True)
    if older is not None and (root.versions / older).is_dir():
        root.switch(root.previous, older)
    else:  # there was none, or it was the version this attempt replaced and removed
        root.previous.unlink(missing_ok=True)
        fsync_directory(root.path)
    return list(problems)


def queue_update(
    bundle: Path, data_dir: Path, *, move: bool = False, allowance: str | None = None
) -> Path:
    """Drop ``bundle`` into the update inbox; ``member-kiosk-update.path`` starts the installer.

    For the sync agent, which runs unprivileged: it receives HQ's command and the bundle, and
    the root-owned installer does the rest. The bundle appears in the inbox in one rename.
    ``move`` renames ``bundle`` itself into the inbox instead of copying it: for a bundle
    already written to the same file system (the agent's downloads), so it is not written to
    the storage a second time. ``allowance`` (HQ's signed rollback allowance) is written to
    ``updates/allowances/<inbox name>.json`` first, so the installer finds it with the bundle.
    """
    inbox = data_dir / UPDATES_DIR / INBOX
    inbox.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = inbox / f"{stamp}-{bundle.name}"
    if allowance is not None:
        allowances = data_dir / UPDATES_DIR / ALLOWANCES
        allowances.mkdir(parents=True, exist_ok=True)
        part = allowances / f".{target.name}.part"
        part.write_text(allowance, encoding="utf-8")
        os.replace(part, _allowance_path(data_dir, target))
    if move:
        os.replace(bundle, target)
        return target
    partial = inbox.parent / f".{stamp}-{bundle.name}.part"
    shutil.copyfile(bundle, partial)
    os.replace(partial, target)
    return target


def drain_inbox(data_dir: Path, **options: Any) -> list[tuple[Path, UpdateResult | str]]:
    """Apply every bundle in the inbox in arrival order (``options`` as for
    :func:`apply_update`); each bundle leaves the inbox whatever the outcome, so the path unit
    does not start the installer again for it.
    """
    inbox = data_dir / UPDATES_DIR / INBOX
    work = data_dir / UPDATES_DIR / "applying"
    outcomes: list[tuple[Path, UpdateResult | str]] = []
    for bundle in sorted(inbox.glob("*")) if inbox.is_dir() else []:
        work.mkdir(parents=True, exist_ok=True)
        taken = work / bundle.name
        os.replace(bundle, taken)
        allowance_file = _allowance_path(data_dir, bundle)
        outcome: UpdateResult | str
        try:
            allowance = _read_small(allowance_file)
            outcome = apply_update(taken, data_dir=data_dir, allowance=allowance, **options)
        except KioskError as exc:
            outcome = f"{exc.code}: {exc.message}"
            _record(
                data_dir,
                {
                    "at": datetime.now(UTC).isoformat(),
                    "bundle": taken.name,
                    "status": "refused",
                    "problems": [outcome],
                },
            )
        finally:
            taken.unlink(missing_ok=True)
            allowance_file.unlink(missing_ok=True)
        outcomes.append((bundle, outcome))
    return outcomes


def _allowance_path(data_dir: Path, queued: Path) -> Path:
    return data_dir / UPDATES_DIR / ALLOWANCES / f"{queued.name}.json"


def _read_small(path: Path) -> str | None:
    """The allowance queued with a bundle, if any (never more than a few kB is read)."""
    try:  # a plain file only: the installer runs as root in a directory others write
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:
        return ""  # not a file it can read: no allowance (a downgrade is refused)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return handle.read(_MAX_ALLOWANCE + 1).decode("utf-8", errors="replace")


def prune_versions(install_root: Path) -> list[Path]:
    """Remove installed versions other than ``current`` and ``previous``; nothing while an
    update is installing or switching (its new version is neither yet)."""
    root = InstallRoot(install_root)
    removed: list[Path] = []
    if not root.versions.is_dir():
        return removed
    try:
        with busy.installing(root.install_lock, timeout=0):
            keep = {root.version_of(root.current), root.version_of(root.previous)}
            for version in sorted(root.versions.iterdir()):
                if version.name not in keep:
                    shutil.rmtree(version, ignore_errors=True)
                    removed.append(version)
    except busy.LockTimeout:
        log.info("an update is running: old versions are removed at the next cleanup")
    return removed


# -- HQ's update command: fetch the bundle HQ offers, check it, queue it ----------------------

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_READ = 64 * 1024


@dataclass(frozen=True)
class BundleOffer:
    """Where HQ's bundle is and what it must be: its URL, SHA-256, size and version."""

    url: str
    sha256: str
    size: int
    version: str
    rollback_allowance: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, object], max_bytes: int) -> BundleOffer:
        """The offer in an ``update`` command's arguments.

        Raises:
            UpdateRefused: ``bad_url`` for anything but an http(s) URL with a host,
                ``bundle_too_large`` above ``max_bytes`` (:func:`check_bundle_size`),
                ``invalid_input`` otherwise.
        """
        url, sha256, size, version = (args.get(k) for k in ("url", "sha256", "size", "version"))
        allowance = args.get("rollback_allowance")
        if not isinstance(url, str) or not url:
            raise UpdateRefused("the update names no bundle URL", code="invalid_input")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpdateRefused(f"not an http(s) URL: {url[:200]!r}", code="bad_url")
        if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
            raise UpdateRefused("sha256 must be 64 lower-case hex digits", code="invalid_input")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise UpdateRefused("size must be a positive number of bytes", code="invalid_input")
        check_bundle_size(size, max_bytes)
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise UpdateRefused(f"not a version: {str(version)[:80]!r}", code="invalid_input")
        if allowance is not None and (
            not isinstance(allowance, str) or len(allowance) > _MAX_ALLOWANCE
        ):
            raise UpdateRefused("rollback_allowance is not an allowance", code="invalid_input")
        return cls(url, sha256, size, version, allowance)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib's default also follows them to ftp)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise UpdateRefused(f"redirected to {newurl[:200]!r}", code="bad_url")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download_bundle(
    offer: BundleOffer,
    target: Path,
    *,
    timeout_s: float,
    cancel: threading.Event | None = None,
) -> None:
    """Fetch ``offer`` into ``target``: at most ``offer.size`` bytes within ``timeout_s``,
    kept only when its size and SHA-256 are the ones HQ signed.

    Raises:
        UpdateFailed: ``download_failed`` (unreachable, HTTP error, too slow, cancelled).
        UpdateRefused: ``bundle_size`` or ``bundle_hash`` when what came is not the bundle.
    """
    deadline = time.monotonic() + timeout_s
    part = target.with_name(f".{target.name}.part")
    opener = urllib.request.build_opener(_HttpRedirectsOnly())
    request = urllib.request.Request(offer.url, headers={"Accept-Encoding": "identity"})
    digest = hashlib.sha256()
    got = 0
    done = False
    try:
        with (
            opener.open(request, timeout=min(timeout_s, 30.0)) as response,
            part.open("wb") as out,
        ):
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) != offer.size:
                raise UpdateRefused(
                    f"the server sends {int(length)} bytes, HQ signed {offer.size}",
                    code="bundle_size",
                )
            while chunk := response.read1(_READ):
                got += len(chunk)
                if got > offer.size:
                    raise UpdateRefused(
                        f"the download is longer than the {offer.size} bytes HQ signed",
                        code="bundle_size",
                    )
                digest.update(chunk)
                out.write(chunk)
                if cancel is not None and cancel.is_set():
                    raise UpdateFailed("the download was stopped", code="download_failed")
                if time.monotonic() > deadline:
                    raise UpdateFailed(
                        f"the download took longer than {timeout_s:.0f} s", code="download_failed"
                    )
            out.flush()
            os.fsync(out.fileno())
        if got != offer.size:
            raise UpdateRefused(
                f"the download is {got} bytes, HQ signed {offer.size}", code="bundle_size"
            )
        if digest.hexdigest() != offer.sha256:
            raise UpdateRefused(
                "the download does not match the SHA-256 HQ signed", code="bundle_hash"
            )
        os.replace(part, target)
        done = True
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        plain = isinstance(exc, urllib.error.URLError) and not isinstance(
            exc, urllib.error.HTTPError
        )
        reason = exc.reason if isinstance(exc, urllib.error.URLError) and plain else exc
        raise UpdateFailed(
            f"downloading {offer.url[:200]}: {reason}", code="download_failed"
        ) from None
    finally:
        if not done:
            part.unlink(missing_ok=True)


@dataclass(frozen=True)
class QueuedUpdate:
    """A bundle HQ offered, checked and waiting in the inbox for the installer."""

    version: str
    path: Path
    size: int


def receive_update(
    offer: BundleOffer,
    data_dir: Path,
    public_key: Ed25519PublicKey,
    *,
    running_version: str,
    timeout_s: float,
    cancel: threading.Event | None = None,
) -> QueuedUpdate:
    """Download HQ's bundle, check its size, SHA-256, signature and version, then queue it.

    What :func:`queue_update` puts in the inbox has passed the same signature and file checks
    the installer makes, so a tampered or mislabelled bundle never reaches it.

    A version older than the running one is fetched only with HQ's rollback allowance for
    exactly that step (the command's signature vouches for it; the installer checks its own
    signature again) and queued with it.

    Raises:
        UpdateRefused: ``already_current``, ``downgrade``, ``bundle_size``, ``bundle_hash``,
            ``bundle_signature``, ``bundle_invalid`` or ``version_mismatch`` (nothing queued).
        UpdateFailed: ``download_failed`` (nothing queued; HQ may offer it again).
    """
    if offer.version == running_version or compare_versions(offer.version, running_version) == 0:
        raise UpdateRefused(f"version {offer.version} is already running", code="already_current")
    if _older(offer.version, running_version):
        allowance = offer.rollback_allowance
        read = None if allowance is None else _read_allowance(allowance)
        device = read.device_id if read is not None else "DEVICE"
        if allowance is None:
            raise _downgrade(running_version, offer.version, device)
        if problem := _binding_problem(read, running_version, offer.version, offer.sha256):
            raise _downgrade(
                running_version, offer.version, device, f", and HQ's rollback allowance {problem}"
            )
    downloads = data_dir / UPDATES_DIR / DOWNLOADS
    downloads.mkdir(parents=True, exist_ok=True)
    staged = downloads / f"member-kiosk-{offer.version}.tar"
    try:
        download_bundle(offer, staged, timeout_s=timeout_s, cancel=cancel)
        try:
            manifest = verify_bundle(staged, public_key, None)
        except IntegrityError as exc:
            raise UpdateRefused(exc.message, code=exc.code) from None
        if manifest.version != offer.version:
            raise UpdateRefused(
                f"the bundle holds version {manifest.version}, not {offer.version}",
                code="version_mismatch",
            )
        allowance = offer.rollback_allowance if _older(offer.version, running_version) else None
        queued = queue_update(staged, data_dir, move=True, allowance=allowance)
        return QueuedUpdate(manifest.version, queued, offer.size)
    finally:
        staged.unlink(missing_ok=True)
