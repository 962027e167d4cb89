"""The OS image stage: shell scripts lint clean, udev rules verify, the install step works
against a root with pi-gen's chroot helper stubbed, and for real in a Debian Bookworm root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
STAGE = IMAGES / "stage-member-kiosk"
APPLIANCE = STAGE / "01-appliance"
FILESYSTEM = APPLIANCE / "filesystem/root"
INSTALLER = FILESYSTEM / "usr/local/sbin/member-kiosk-install"
SHELL_SCRIPTS = [
    STAGE / "prerun.sh",
    APPLIANCE / "00-run.sh",
    INSTALLER,
    IMAGES / "build-image.sh",
    IMAGES / "tools/udevadm-verify",
]
UDEV_RULES = [
    ROOT / "drivers/udev/99-member-kiosk.rules",
    *sorted((FILESYSTEM / "etc/udev/rules.d").glob("*.rules")),
]
# The appliance's units; HQ's (systemd/hq/) are not installed on a kiosk.
APPLIANCE_UNITS = sorted(p for p in (ROOT / "systemd").iterdir() if p.is_file())
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "member-kiosk"
MIRROR = os.environ.get("KIOSK_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is not installed (see the Makefile's DEB_PACKAGES)")
    return found


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_stage_scripts_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    proc = subprocess.run(
        [need("shellcheck"), "-x", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("rules", UDEV_RULES, ids=lambda p: p.name)
def test_udev_rules_verify(rules: Path) -> None:
    proc = subprocess.run(
        [str(IMAGES / "tools/udevadm-verify"), str(rules)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Fail:    0" in proc.stdout


def test_udevadm_verify_catches_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text('SUBSYSTEM=="tty", ATTRS{idVendor}="0403", SYMLINK+="kiosk-dispenser"\n')
    proc = subprocess.run(
        [str(IMAGES / "tools/udevadm-verify"), str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0


def test_first_config_of_a_new_device_is_valid() -> None:
    text = (FILESYSTEM / "etc/member-kiosk/config.toml").read_text()
    config = parse_config(text)
    assert config.ui.touch_provider == "hidinput"
    assert config.ui.touch_device == "/dev/input/kiosk-touch"
    assert tomllib.loads(text)


def test_pi_gen_config_pins_the_release_and_names_the_stage() -> None:
    config = (IMAGES / "config").read_text()
    assert 'RELEASE="bookworm"' in config
    build = (IMAGES / "build-image.sh").read_text()
    assert "STAGE_LIST=" in build and "stage-member-kiosk" in build
    assert (STAGE / "EXPORT_IMAGE").exists()
    packages = (STAGE / "00-packages/00-packages-nr").read_text().split()
    assert {"fonts-noto-cjk", "libzbar0", "mosquitto", "python3-venv"} <= set(packages)
    assert {"python3-picamera2", "python3-lgpio"} <= set(
        (STAGE / "00-packages/01-packages-nr").read_text().split()
    )


def hq_enrol_pub(directory: Path) -> Path:
    """HQ's enrolment public key as `kiosk hq enrol-key` writes it."""
    from hq.enrol import write_enrol_key

    return write_enrol_key(directory)[1]


def install_step(
    rootfs: Path, wheels: Path, on_chroot: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """pi-gen's way: 00-run.sh sourced-in environment with ROOTFS_DIR and on_chroot."""
    script = (
        f"on_chroot() {{ {on_chroot}; }}\nexport -f on_chroot\nbash -e {APPLIANCE / '00-run.sh'}\n"
    )
    outer = {
        k: v for k, v in os.environ.items() if k not in ("KIOSK_HQ_ENROL_PUB", "KIOSK_NO_ENROL_KEY")
    }
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={
            **outer,
            "ROOTFS_DIR": str(rootfs),
            "KIOSK_WHEELS": str(wheels),
            **env,
        },
        timeout=1800,
    )


def run_install_step(rootfs: Path, wheels: Path, on_chroot: str, **env: str) -> str:
    proc = install_step(rootfs, wheels, on_chroot, **env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_install_step_lays_out_the_target_with_chroot_stubbed(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "member_center_kiosk-0.1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + bytes(18))
    recorded = tmp_path / "chroot-commands"
    key = hq_enrol_pub(tmp_path / "hq")
    run_install_step(
        rootfs,
        wheels,
        f"cat >> {recorded}",
        KIOSK_STORE_BROKER="1",
        KIOSK_HQ_ENROL_PUB=str(key),
    )
    units = {p.name for p in APPLIANCE_UNITS}
    assert units <= {p.name for p in (rootfs / "etc/systemd/system").iterdir()}
    assert not (rootfs / "etc/systemd/system/member-kiosk-hq-remind.service").exists()
    assert (rootfs / "etc/udev/rules.d/99-member-kiosk.rules").read_bytes() == (
        ROOT / "drivers/udev/99-member-kiosk.rules"
    ).read_bytes()
    assert (rootfs / "etc/udev/rules.d/98-member-kiosk-touch.rules").exists()
    journald = (rootfs / "etc/systemd/journald.conf.d/50-member-kiosk.conf").read_text()
    assert "SystemMaxUse=" in journald
    assert os.access(rootfs / "usr/local/sbin/member-kiosk-install", os.X_OK)
    assert (rootfs / "opt/member-kiosk/wheels/member_center_kiosk-0.1.0-py3-none-any.whl").exists()
    assert (rootfs / "opt/member-kiosk/share/doc/technician.md").exists()
    commands = recorded.read_text()
    assert "/usr/local/sbin/member-kiosk-install" in commands
    assert 'KIOSK_STORE_BROKER="1"' in commands
    # HQ's enrolment key where `kiosk provision enrol` looks for it (IMAGE_ENROL_KEY); the
    # services' environment does not name it (no unit runs an enrolment)
    from edge.provisioning.enrolment import IMAGE_ENROL_KEY
    from edge.security.keys import load_public_key

    installed = rootfs / IMAGE_ENROL_KEY.relative_to("/")
    assert installed.read_bytes() == key.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o644
    load_public_key(installed)  # what `kiosk provision enrol` loads by default
    assert "KIOSK_HQ_ENROL_KEY" not in (rootfs / "etc/default/member-kiosk").read_text()
    # a second run (pi-gen re-runs a stage after a failure) installs the same key again
    run_install_step(rootfs, wheels, f"cat >> {recorded}", KIOSK_HQ_ENROL_PUB=str(key))
    assert installed.read_bytes() == key.read_bytes()
    assert "KIOSK_HQ_ENROL_KEY" not in (rootfs / "etc/default/member-kiosk").read_text()


def _stub_wheels(tmp_path: Path) -> tuple[Path, Path]:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "member_center_kiosk-0.1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + bytes(18))
    return rootfs, wheels


def test_install_step_refuses_without_hq_enrol_key_unless_waived(tmp_path: Path) -> None:
    rootfs, wheels = _stub_wheels(tmp_path)
    missing = install_step(rootfs, wheels, "cat >/dev/null")
    assert missing.returncode != 0
    assert "HQ's enrolment public key is missing" in missing.stderr
    assert "KIOSK_HQ_ENROL_PUB" in missing.stderr and "KIOSK_NO_ENROL_KEY=1" in missing.stderr
    assert not (rootfs / "etc").exists()  # refused before laying anything out
    not_a_key = tmp_path / "hq-enrol.pub"
    not_a_key.write_text("hello\n")
    bad = install_step(rootfs, wheels, "cat >/dev/null", KIOSK_HQ_ENROL_PUB=str(not_a_key))
    assert bad.returncode != 0 and "is not a PEM public key file" in bad.stderr
    waived = run_install_step(rootfs, wheels, "cat >/dev/null", KIOSK_NO_ENROL_KEY="1")
    assert "no HQ enrolment key in this image" in waived
    assert not (rootfs / "etc/member-kiosk/hq-enrol.pub").exists()
    defaults = (rootfs / "etc/default/member-kiosk").read_text()
    assert "\nKIOSK_HQ_ENROL_KEY=" not in defaults


def test_build_script_refuses_early_without_hq_enrol_key(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KIOSK_HQ_ENROL_PUB", "KIOSK_NO_ENROL_KEY")
    }
    proc = subprocess.run(
        [str(IMAGES / "build-image.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode != 0
    assert "HQ's enrolment public key is missing" in proc.stderr
    not_a_key = tmp_path / "hq-enrol.pub"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\n")
    proc = subprocess.run(
        [str(IMAGES / "build-image.sh")],
        capture_output=True,
        text=True,
        env={**env, "KIOSK_HQ_ENROL_PUB": str(not_a_key)},
        timeout=60,
    )
    assert proc.returncode != 0 and "is not a PEM public key file" in proc.stderr


def test_install_step_refuses_without_a_wheel(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "wheels").mkdir()
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f"on_chroot() {{ cat; }}; export -f on_chroot; bash -e {APPLIANCE / '00-run.sh'}",
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ROOTFS_DIR": str(tmp_path / "rootfs"),
            "KIOSK_WHEELS": str(tmp_path / "wheels"),
        },
    )
    assert proc.returncode != 0 and "no appliance wheel" in proc.stderr


# -- for real: bootstrap a Debian Bookworm root, install into it, check inside it -----------

BASE_PACKAGES = ["systemd", "udev", "passwd", "ca-certificates"]


def _packages() -> list[str]:
    listed = (STAGE / "00-packages/00-packages-nr").read_text().split()
    return sorted(set(listed + BASE_PACKAGES))


def _base_root() -> Path:
    """A Bookworm root with the stage's packages, cached by package list.

    Made by mmdebstrap, which resolves and unpacks with apt and dpkg in a few runs (about
    25 s here); debootstrap, pi-gen's own tool, makes the same minbase root in about 70 s,
    most of it its shell parsing the package lists."""
    packages = _packages()
    key = hashlib.sha256(" ".join(["bookworm", MIRROR, *packages]).encode()).hexdigest()[:16]
    base = CACHE / "bootstrap" / f"bookworm-{key}"
    done = base / ".complete"
    if done.exists():
        return base / "root"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    proc = subprocess.run(
        [
            need("mmdebstrap"),
            "--variant=minbase",
            f"--include={','.join(packages)}",
            "bookworm",
            str(base / "root"),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done.touch()
    return base / "root"


@contextlib.contextmanager
def mounted(rootfs: Path) -> Iterator[None]:
    """What pi-gen's on_chroot mounts, plus the host's pip cache to save downloads."""
    pip_cache = Path.home() / ".cache/pip"
    pip_cache.mkdir(parents=True, exist_ok=True)
    mounts = [
        (["-t", "proc", "proc"], rootfs / "proc"),
        (["--bind", "/dev"], rootfs / "dev"),
        (["-t", "sysfs", "sysfs"], rootfs / "sys"),
        (["--bind", str(pip_cache)], rootfs / "root/.cache/pip"),
    ]
    if Path("/opt/wheels").is_dir():
        mounts.append((["--bind", "-o", "ro", "/opt/wheels"], rootfs / "opt/wheels"))
    done: list[Path] = []
    try:
        for args, target in mounts:
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, str(target)], check=True)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)


def chroot(rootfs: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "chroot",
            str(rootfs),
            "/usr/bin/env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
            *(f"{k}={v}" for k, v in env.items()),
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_install_step_for_real_in_a_debian_bookworm_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap and chroot need root")
    base = _base_root()
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)], check=True)
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    # The host's trust store and wheel directory (a mirror or TLS proxy may need them).
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/host-ca.crt")
    pip_env = {"PIP_CERT": "/etc/ssl/certs/host-ca.crt", "PIP_FIND_LINKS": ""}
    if Path("/opt/wheels").is_dir():
        pip_env["PIP_FIND_LINKS"] = "/opt/wheels"
    # pi-gen's chroot starts with a clean environment: none of this host's settings leak in.
    clean = " ".join(
        [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
            "PIP_CONFIG_FILE=/dev/null",
            *(f"{k}={v}" for k, v in pip_env.items()),
        ]
    )
    with mounted(rootfs):
        out = run_install_step(
            rootfs,
            wheels,
            f'chroot "${{ROOTFS_DIR}}" /usr/bin/env -i {clean} /bin/bash -e',
            KIOSK_STORE_BROKER="0",
            KIOSK_HQ_ENROL_PUB=str(hq_enrol_pub(tmp_path / "hq")),
        )
        assert "member-kiosk-install: installed" in out
        version = chroot(rootfs, "/opt/member-kiosk/current/bin/kiosk", "--version")
        assert version.returncode == 0, version.stderr
        from edge import __version__

        assert version.stdout.strip() == f"kiosk, version {__version__}"
        doctor = chroot(
            rootfs,
            "/opt/member-kiosk/current/bin/kiosk",
            "doctor",
            "--sim",
            KIOSK_DATA_DIR="/tmp/doctor",
            PYTHONOPTIMIZE="2",  # as the touchscreen's unit runs
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "result: all devices usable" in doctor.stdout
        # the optimized bytecode the touchscreen reads: the standard library, the app, its
        # dependencies (the app cannot write it under /usr or /opt itself)
        for module in (
            "usr/lib/python3*/json/__pycache__/__init__.*.opt-2.pyc",
            "opt/member-kiosk/current/lib/python3*/site-packages/edge/__pycache__/app.*.opt-2.pyc",
            "opt/member-kiosk/current/lib/python3*/site-packages/sqlalchemy/__pycache__/"
            "__init__.*.opt-2.pyc",
        ):
            assert list(rootfs.glob(module)), module
        # apt compiles it again after changing packages (a Python update, say)
        stale = next(rootfs.glob("usr/lib/python3*/json/__pycache__/__init__.*.opt-2.pyc"))
        stale.unlink()
        hooks = chroot(rootfs, "apt-config", "dump", "DPkg::Post-Invoke").stdout.splitlines()
        (hook,) = [
            line.split(" ", 1)[1].removesuffix(";").strip('"')
            for line in hooks
            if line.startswith("DPkg::Post-Invoke::") and "edge.lifecycle.bytecode" in line
        ]
        assert chroot(rootfs, "/bin/sh", "-c", hook).returncode == 0
        assert stale.exists()
        units = sorted(p.name for p in APPLIANCE_UNITS)
        verify = chroot(
            rootfs,
            "systemd-analyze",
            "verify",
            "--man=no",
            *(f"/etc/systemd/system/{u}" for u in units),
        )
        assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), (
            verify.stdout + verify.stderr
        )
        # the installer is idempotent: a repair run changes nothing and succeeds
        again = chroot(rootfs, "/usr/local/sbin/member-kiosk-install")
        assert again.returncode == 0, again.stderr
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "member-kiosk.service").is_symlink()
    assert (wants / "member-kiosk-sync.service").is_symlink()
    assert (
        rootfs / "etc/systemd/system/timers.target.wants/member-kiosk-backup.timer"
    ).is_symlink()
    assert not (wants / "mosquitto.service").exists()
    groups = chroot(rootfs, "id", "-nG", "kiosk").stdout.split()
    assert {"kiosk", "render", "video", "input", "dialout", "lp", "gpio"} <= set(groups)
    data = rootfs / "var/lib/member-kiosk"
    assert (data / "config.toml").exists()
    assert data.stat().st_mode & 0o777 == 0o750
    assert (rootfs / "opt/member-kiosk/current").resolve().parent.name == "versions"
