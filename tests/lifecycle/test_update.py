"""Updates: only signed bundles, never during a sale, a healthy new version or a rollback."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import IntegrityError
from edge.lifecycle import busy
from edge.lifecycle.update import (
    InstallRoot,
    UpdateResult,
    apply_update,
    compare_versions,
    default_python,
    drain_inbox,
    pip_from_outside,
    prune_versions,
    queue_update,
    update_fault,
)
from edge.security.bundle import build_bundle, verify_bundle
from edge.services import members, points
from edge.services.verify import verify_ledger
from tests.lifecycle.releases import shared_release, update_key


def small_wheel(tmp: Path, name: str = "member_center_kiosk-9.9.9-py3-none-any.whl") -> Path:
    """A well-formed (tiny) wheel file, enough for bundle checks that never install it."""
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("edge_probe.py", "x = 1\n")
    return path


def installable_wheel(tmp: Path, version: str = "9.9.9") -> Path:
    """A tiny wheel pip installs in a moment: one module, and no ``kiosk`` to run a doctor."""
    name = f"member_center_kiosk-{version}"
    files = {
        "edge_probe.py": b"x = 1\n",
        f"{name}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: member-center-kiosk\nVersion: {version}\n"
        ).encode(),
        f"{name}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        + f",{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}.dist-info/RECORD"] = (
        "\n".join([*record, f"{name}.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = tmp / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, data in files.items():
            z.writestr(member, data)
    return path


@pytest.fixture
def hq_key(tmp_path):
    return update_key(tmp_path)


def test_a_signed_bundle_verifies_and_unpacks_only_its_files(tmp_path, hq_key):
    key, _ = hq_key
    wheel = small_wheel(tmp_path)
    dep = small_wheel(tmp_path, "probe_dep-1.0-py3-none-any.whl")
    build_bundle([wheel, dep], "9.9.9", key, tmp_path / "b.tar", complete=True)
    manifest = verify_bundle(tmp_path / "b.tar", key.public_key(), tmp_path / "st")
    assert (manifest.version, manifest.wheel, manifest.complete) == ("9.9.9", wheel.name, True)
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == sorted([wheel.name, dep.name])
    assert (tmp_path / "st" / wheel.name).read_bytes() == wheel.read_bytes()


def test_bundles_hq_did_not_sign_are_refused(tmp_path, hq_key):
    key, _ = hq_key
    build_bundle([small_wheel(tmp_path)], "9.9.9", Ed25519PrivateKey.generate(), tmp_path / "b.tar")
    with pytest.raises(IntegrityError) as err:
        verify_bundle(tmp_path / "b.tar", key.public_key(), tmp_path / "st")
    assert err.value.code == "bundle_signature"
    assert not (tmp_path / "st").exists()


def _rewrite(bundle: Path, out: Path, change) -> None:
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            for name, new in change(member.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(new)
                dst.addfile(info, io.BytesIO(new))


@pytest.mark.parametrize(
    "change",
    [
        # a wheel swapped after signing
        lambda n, d: [(n, d + b"\0" if n.endswith(".whl") else d)],
        # an extra file smuggled in, with a path that escapes the staging directory
        lambda n, d: [(n, d)] + ([("../../evil.whl", d)] if n.endswith(".whl") else []),
        # a wheel left out
        lambda n, d: [] if n.endswith(".whl") else [(n, d)],
        # the manifest edited (say, the version)
        lambda n, d: [(n, d.replace(b"9.9.9", b"9.9.8") if n == "manifest.json" else d)],
    ],
    ids=["altered-wheel", "extra-file", "missing-wheel", "edited-manifest"],
)
def test_altered_bundles_are_refused(tmp_path, hq_key, change):
    key, _ = hq_key
    good = tmp_path / "good.tar"
    build_bundle([small_wheel(tmp_path)], "9.9.9", key, good)
    bad = tmp_path / "bad.tar"
    _rewrite(good, bad, change)
    with pytest.raises(IntegrityError) as err:
        verify_bundle(bad, key.public_key(), tmp_path / "st" / "inner")
    assert err.value.code in {"bundle_invalid", "bundle_signature"}
    assert not (tmp_path / "evil.whl").exists()


def test_no_update_switches_while_a_sale_is_in_progress(tmp_path, hq_key):
    key, _ = hq_key
    build_bundle([installable_wheel(tmp_path)], "9.9.9", key, tmp_path / "b.tar")
    data = tmp_path / "data"
    with busy.hold("sale", data), pytest.raises(busy.LockTimeout) as err:
        apply_update(
            tmp_path / "b.tar",
            data_dir=data,
            install_root=tmp_path / "opt",
            public_key=key.public_key(),
            config=KioskConfig(),
            lock_timeout=0.3,
        )
    assert "sale" in err.value.message
    # the version it installed meanwhile is gone again: nothing changed
    assert list((tmp_path / "opt").glob("versions/*")) == []
    assert not (tmp_path / "opt" / "current").exists()


def test_a_sale_in_progress_holds_back_the_switch_not_the_install(tmp_path, hq_key):
    """An install takes minutes on a Pi: the kiosk prints and dispenses meanwhile, and only the
    switch waits for what is in progress."""
    key, _ = hq_key
    build_bundle([installable_wheel(tmp_path)], "9.9.9", key, tmp_path / "b.tar")
    data, root = tmp_path / "data", tmp_path / "opt"
    outcome: dict[str, UpdateResult] = {}

    def update() -> None:
        outcome["result"] = apply_update(
            tmp_path / "b.tar",
            data_dir=data,
            install_root=root,
            public_key=key.public_key(),
            config=KioskConfig(),
            lock_timeout=300,
        )

    worker = threading.Thread(target=update)
    with busy.hold("sale", data):
        worker.start()
        installed = root / "versions/9.9.9/update-manifest.json"
        deadline = time.monotonic() + 300
        while not installed.exists() and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert installed.exists(), outcome
        assert worker.is_alive() and not root.joinpath("current").exists()
        # a second update waits for this one: one installs at a time
        with (
            pytest.raises(busy.LockTimeout, match="another update"),
            busy.installing(InstallRoot(root).install_lock, timeout=0.2),
        ):
            pass
    worker.join(300)
    # switched once the sale was done; the tiny wheel has no kiosk for the health check
    assert outcome["result"].status == "rolled_back"
    assert not root.joinpath("current").exists()
    assert list(root.glob("versions/*")) == []


def test_versions_compare_as_versions():
    assert compare_versions("0.10.0", "0.9.0") == 1  # not as text
    assert compare_versions("0.2.9", "0.3.1") == -1
    assert compare_versions("1.0", "1.0.0") == 0
    assert compare_versions("1.0.1rc1", "1.0.1") == -1  # a pre-release comes before its release
    assert compare_versions("1.0.1", "1.0.1rc1") == 1
    assert compare_versions("nightly", "1.0") is None  # cannot be ordered: needs HQ's allowance


def test_a_version_reinstalled_for_previous_stays_when_the_switch_must_wait(tmp_path, hq_key):
    """HQ offers again the version a rollback left as ``previous``: an update that then cannot
    switch (a sale in progress) leaves ``previous`` a version to roll back to."""
    key, _ = hq_key
    root = InstallRoot(tmp_path / "opt")
    for v in ("1.0.0", "9.9.9"):
        (root.versions / v / "bin").mkdir(parents=True)
    root.switch(root.previous, "9.9.9")
    root.switch(root.current, "1.0.0")
    build_bundle([installable_wheel(tmp_path)], "9.9.9", key, tmp_path / "b.tar")
    data = tmp_path / "data"
    with busy.hold("sale", data), pytest.raises(busy.LockTimeout):
        apply_update(
            tmp_path / "b.tar",
            data_dir=data,
            install_root=root.path,
            public_key=key.public_key(),
            config=KioskConfig(),
            lock_timeout=0.3,
        )
    assert (root.version_of(root.current), root.version_of(root.previous)) == ("1.0.0", "9.9.9")
    assert (root.versions / "9.9.9" / "update-manifest.json").exists()  # installed afresh
    assert sorted(p.name for p in root.versions.iterdir()) == ["1.0.0", "9.9.9"]


def test_cleanup_removes_no_version_while_an_update_runs(tmp_path):
    root = InstallRoot(tmp_path)
    for v in ("1", "2", "3"):
        (root.versions / v / "bin").mkdir(parents=True)
    root.switch(root.current, "1")
    with busy.installing(root.install_lock):  # "3" is being installed
        assert prune_versions(tmp_path) == []
    assert sorted(p.name for p in root.versions.iterdir()) == ["1", "2", "3"]
    assert sorted(p.name for p in prune_versions(tmp_path)) == ["2", "3"]


def test_switch_and_prune_keep_current_and_previous(tmp_path):
    root = InstallRoot(tmp_path)
    for v in ("1", "2", "3"):
        (root.versions / v / "bin").mkdir(parents=True)
    root.switch(root.current, "2")
    root.switch(root.previous, "1")
    root.switch(root.current, "3")
    assert (root.version_of(root.current), root.version_of(root.previous)) == ("3", "1")
    assert root.current.resolve() == (root.versions / "3").resolve()
    assert [p.name for p in prune_versions(tmp_path)] == ["2"]
    assert sorted(p.name for p in root.versions.iterdir()) == ["1", "3"]


# -- real installs: a virtual environment per version, pip, the new version's doctor --------


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return {
        "1.0.1": shared_release(tmp_path_factory, "1.0.1"),
        "1.0.2": shared_release(tmp_path_factory, "1.0.2"),
        # a release that migrates the database and calls a camera API that does not exist
        "1.0.3": shared_release(
            tmp_path_factory,
            "1.0.3",
            patch={
                "drivers/factory.py": ("return SimulatedCamera(", "return SimulatedCamera.open(")
            },
            migration=True,
        ),
    }


@pytest.fixture
def store(tmp_path):
    app = AppContext.open(tmp_path / "data", config=KioskConfig())
    card = members.register_member(app, "13800138000", True).card_no
    points.accrue_purchase(app, card, 88_800, "R-1")
    app.close()
    return tmp_path / "data"


def ledger(data: Path):
    app = AppContext.open(data, config=KioskConfig(), upgrade_schema=False)
    try:
        report = verify_ledger(app)
        return report.ok, report.entries, members.show_member(app, phone="13800138000").balance
    finally:
        app.close()


def kiosk_version(root: Path) -> str:
    out = subprocess.run(
        [str(root / "current/bin/kiosk"), "--version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def install(bundle_dir, releases, version, key, store, root, **options):
    bundle = bundle_dir / f"kiosk-{version}.tar"
    build_bundle([releases[version]], version, key, bundle)
    return apply_update(
        bundle,
        data_dir=store,
        install_root=root,
        public_key=key.public_key(),
        config=KioskConfig(),
        health_timeout=180,
        **options,
    )


FAKE_SYSTEMCTL = """\
import json, sqlite3, sys
from pathlib import Path
store, log = Path(sys.argv[1]), Path(sys.argv[2])
action, units = sys.argv[3], sys.argv[4:]
db = sqlite3.connect(store / "kiosk.db")
revision = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
db.close()
if action == "stop":  # the running services' last sale, committed as they stop
    from edge.app import AppContext
    from edge.config import KioskConfig
    from edge.services import members, points
    app = AppContext.open(store, config=KioskConfig(), upgrade_schema=False)
    card = members.show_member(app, phone="13800138000").card_no
    done = log.read_text().count("stop") if log.exists() else 0
    points.accrue_purchase(app, card, 10_000, f"R-last-{done}")
    app.close()
with log.open("a") as out:
    out.write(json.dumps([action, units, revision]) + "\\n")
"""


@pytest.fixture
def systemctl(tmp_path, store):
    """systemd's stand-in: logs each stop and start with the schema revision it saw then."""
    script = tmp_path / "systemctl.py"
    script.write_text(FAKE_SYSTEMCTL)
    log = tmp_path / "systemctl.log"
    command = (sys.executable, str(script), str(store), str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return command, calls


@pytest.mark.slow
def test_a_good_update_is_installed_and_keeps_the_previous_version(
    tmp_path, hq_key, releases, store, systemctl, no_index
):
    key, _ = hq_key
    root = tmp_path / "opt"
    command, calls = systemctl
    first = install(
        tmp_path, releases, "1.0.1", key, store, root, services=("k.service",), systemctl=command
    )
    assert [(action, units) for action, units, _ in calls()] == [
        ("stop", ["k.service"]),
        ("start", ["k.service"]),
    ]
    before = ledger(store)
    assert (first.status, first.previous) == ("installed", None), first.problems
    second = install(tmp_path, releases, "1.0.2", key, store, root)
    assert (second.status, second.version, second.previous) == ("installed", "1.0.2", "1.0.1")
    assert second.problems == []
    assert kiosk_version(root) == "kiosk, version 1.0.2"
    assert InstallRoot(root).version_of(InstallRoot(root).previous) == "1.0.1"
    assert (root / "versions/1.0.1/bin/kiosk").exists()
    # with the optimized bytecode the touchscreen's unit reads, and the plain one of the rest
    caches = "lib/python3*/site-packages/edge/__pycache__"
    assert list((root / "versions/1.0.2").glob(f"{caches}/app.*.opt-2.pyc"))
    assert list((root / "versions/1.0.2").glob(f"{caches}/app.cpython-*[0-9].pyc"))
    # the interpreter's own pip installed it: no pip unpacked and compiled into the version
    if pip_from_outside(default_python()):
        assert not list((root / "versions/1.0.2").glob("lib/python3*/site-packages/pip"))
    again = install(tmp_path, releases, "1.0.2", key, store, root)
    assert again.status == "already_current"
    assert ledger(store) == before
    history = [json.loads(x) for x in (store / "updates/history.jsonl").read_text().splitlines()]
    assert [h["status"] for h in history] == ["installed", "installed"]


@pytest.mark.slow
def test_an_update_that_fails_its_health_check_is_rolled_back(
    tmp_path, hq_key, releases, store, systemctl, no_index
):
    key, _ = hq_key
    root = tmp_path / "opt"
    command, calls = systemctl
    assert install(tmp_path, releases, "1.0.1", key, store, root).status == "installed"
    ok, entries, balance = ledger(store)
    # through the inbox, the way HQ's command reaches the root-owned installer
    bundle = tmp_path / "kiosk-1.0.3.tar"
    build_bundle([releases["1.0.3"]], "1.0.3", key, bundle)
    queue_update(bundle, store)
    ((_, result),) = drain_inbox(
        store,
        install_root=root,
        public_key=key.public_key(),
        config=KioskConfig(),
        health_timeout=180,
        services=("k.service",),
        systemctl=command,
    )
    assert not isinstance(result, str)
    assert (result.status, result.version, result.previous) == ("rolled_back", "1.0.3", "1.0.1")
    assert any(p.startswith("scanner:") for p in result.problems), result.problems
    assert result.database_restored  # 1.0.3 had migrated the schema before failing
    # the agent's telemetry says so, for HQ's rollout of 1.0.3
    assert str(update_fault(store)).startswith("update:rolled_back:1.0.3:")
    assert kiosk_version(root) == "kiosk, version 1.0.1"
    assert not (root / "versions/1.0.3").exists()
    assert not list((store / "updates/inbox").iterdir())
    # the services stopped before the snapshot (their last sale is in it) and started again
    # only after the migrated database was put back: nothing committed in between was lost
    ((stop, _, seen_at_stop), (start, _, seen_at_start)) = calls()
    assert (stop, start) == ("stop", "start")
    assert seen_at_start == seen_at_stop
    after_ok, after_entries, after_balance = ledger(store)
    assert (after_ok, after_entries) == (ok, entries + 1)
    assert after_balance > balance  # the stop hook's sale
    doctor = subprocess.run(
        [str(root / "current/bin/kiosk"), "--data-dir", str(store), "--json", "doctor"],
        capture_output=True,
        text=True,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_a_migrated_database_is_put_back_only_while_no_process_has_it_open(tmp_path):
    from sqlalchemy import func, select

    from edge.lifecycle.backup import snapshot
    from edge.lifecycle.update import _put_back_database
    from edge.storage.models import Member

    def registered(app: AppContext) -> int:
        with app.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(Member)) or 0)

    app = AppContext.open(tmp_path / "data", config=KioskConfig())
    members.register_member(app, "13800138000", consent=True)
    live = app.data_dir / "kiosk.db"
    saved = tmp_path / "pre-update.db"
    snapshot(live, saved)
    members.register_member(app, "13900139000", consent=True)
    try:
        assert registered(app) == 2
        # a console command (here: this app) has the ledger open: it is not swapped under it
        assert _put_back_database(saved, live, wait_s=0.2) is False
        assert registered(app) == 2
    finally:
        app.close()
    assert _put_back_database(saved, live, wait_s=5) is True
    again = AppContext.open(tmp_path / "data", config=KioskConfig())
    try:
        assert registered(again) == 1
        assert verify_ledger(again).ok
    finally:
        again.close()


def test_an_interpreter_without_pip_leaves_the_version_its_own(tmp_path):
    """The updater gives a new version no pip of its own only when the interpreter it builds
    on has a pip that can install into it; one without (a venv made without pip, say) gets
    the version's own pip, as ensurepip makes it."""
    bare = tmp_path / "bare"
    subprocess.run([default_python(), "-m", "venv", "--without-pip", str(bare)], check=True)
    assert not pip_from_outside(str(bare / "bin/python"))
    assert not pip_from_outside(str(tmp_path / "no-such-python"))


def test_new_versions_are_built_on_the_systems_python_of_the_same_version(tmp_path):
    """The system's ``python3`` (its site-packages hold picamera2 and lgpio on a Pi) when it
    is this Python's version and can make environments; otherwise this interpreter's own base,
    never a Python of another version whose packages the version's wheels may not fit."""
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = str(getattr(sys, "_base_executable", sys.executable))

    def interpreter(folder: str, name: str, script: str) -> Path:
        """A stand-in ``python3`` linked to ``name``: ``script`` answers every call."""
        (tmp_path / folder).mkdir()
        target = tmp_path / folder / name
        target.write_text(f"#!/bin/sh\n{script}\n")
        target.chmod(0o755)
        link = tmp_path / folder / "python3"
        link.symlink_to(target)
        return link

    with_pip = interpreter("a", here, 'echo "pip 23.0.1 from /usr/lib/python3/dist-packages/pip"')
    bare = interpreter("b", here, "exit 1")  # neither pip nor ensurepip
    other = interpreter(
        "c", "python3.2", 'echo "pip 23.0.1 from /usr/lib/python3/dist-packages/pip"'
    )
    assert default_python(with_pip) == str(with_pip)
    assert default_python(bare) == base
    assert default_python(other) == base
    assert default_python(tmp_path / "none") == base
