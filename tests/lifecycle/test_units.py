"""The systemd units: ``systemd-analyze verify`` on each, plus what the appliance relies on."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.lifecycle.bytecode import OPTIMIZE

ROOT = Path(__file__).resolve().parents[2]
# The appliance's units (systemd/, installed in the kiosk image) and HQ's (systemd/hq/).
UNITS = sorted(
    p
    for folder in (ROOT / "systemd", ROOT / "systemd/hq")
    for p in folder.iterdir()
    if p.suffix in {".service", ".timer", ".path"}
)
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
HARDENING = ("NoNewPrivileges", "ProtectSystem", "PrivateTmp")


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _values(path: Path, section: str, key: str) -> list[str]:
    """Every value of a key that may repeat (configparser keeps only the last)."""
    out: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            out.extend(line.split("=", 1)[1].split())
    return out


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding systemd's own units, ours, and the binaries our units start."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)")
    root = tmp_path_factory.mktemp("unitroot")
    system = next((d for d in SYSTEM_UNIT_DIRS if d.is_dir()), None)
    assert system is not None, "systemd's unit directory not found"
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, etc / unit.name)
    kiosk = root / "opt/member-kiosk/current/bin/kiosk"
    kiosk.parent.mkdir(parents=True)
    kiosk.write_text(f'#!/bin/sh\nexec {ROOT / ".venv/bin/kiosk"} "$@"\n')
    kiosk.chmod(0o755)
    journalctl = shutil.which("journalctl")
    assert journalctl is not None
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(journalctl, root / "usr/bin/journalctl")
    return root


def test_units_are_present() -> None:
    names = {u.name for u in UNITS}
    for timer in (n for n in names if n.endswith(".timer")):
        assert timer.replace(".timer", ".service") in names, f"{timer} starts nothing"
    assert {"member-kiosk.service", "member-kiosk-sync.service"} <= names
    assert {"member-kiosk-expire-points.timer", "member-kiosk-backup.timer"} <= names
    assert "member-kiosk-cleanup.timer" in names


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify(unit: Path, unit_root: Path) -> None:
    proc = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            f"--root={unit_root}",
            f"/etc/systemd/system/{unit.name}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    # Unknown keys are only warnings with exit status 0: any output is a finding.
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_every_referenced_unit_exists(unit: Path, unit_root: Path) -> None:
    """``After=network.online.target`` passes verify and orders nothing: catch such names."""
    known = {p.name for p in (unit_root / "usr/lib/systemd/system").iterdir()}
    known |= {u.name for u in UNITS} | {"getty@tty1.service"}
    refs = {
        "Unit": ("After", "Before", "Wants", "Requires", "Conflicts", "BindsTo", "PartOf"),
        "Install": ("WantedBy", "RequiredBy"),
        "Path": ("Unit",),
        "Timer": ("Unit",),
    }
    for section, keys in refs.items():
        for key in keys:
            for name in _values(unit, section, key):
                template = name.split("@", 1)[0] + "@." + name.rsplit(".", 1)[1]
                assert name in known or template in known, f"{unit.name}: {key}={name} is no unit"


def test_touchscreen_app_unit() -> None:
    unit = _unit(ROOT / "systemd/member-kiosk.service")["Service"]
    assert unit["Type"] == "notify" and unit["WatchdogSec"]
    assert unit["Restart"] == "always"
    assert unit["User"] == "kiosk"
    groups = set(unit["SupplementaryGroups"].split())
    assert {"render", "video", "input"} <= groups
    assert unit["TTYPath"] == "/dev/tty1"
    env = _values(ROOT / "systemd/member-kiosk.service", "Service", "Environment")
    assert "SDL_VIDEODRIVER=kmsdrm" in env and "KIVY_WINDOW=sdl2" in env
    # optimized at the level the installer compiles the bytecode for
    assert f"PYTHONOPTIMIZE={OPTIMIZE}" in env
    assert "getty@tty1.service" in _values(
        ROOT / "systemd/member-kiosk.service", "Unit", "Conflicts"
    )


def test_sync_agent_unit() -> None:
    unit = _unit(ROOT / "systemd/member-kiosk-sync.service")
    assert unit["Service"]["Type"] == "notify" and unit["Service"]["WatchdogSec"]
    assert unit["Service"]["Restart"] == "always"
    assert "network-online.target" in unit["Unit"]["After"].split()


@pytest.mark.parametrize("unit", [u for u in UNITS if u.suffix == ".service"], ids=lambda u: u.name)
def test_services_are_hardened(unit: Path) -> None:
    service = _unit(unit)["Service"]
    for option in HARDENING:
        if unit.name == "member-kiosk-update.service" and option == "ProtectSystem":
            continue  # the installer writes /opt and restarts services
        assert option in service, f"{unit.name} lacks {option}"
    if unit.name not in {"member-kiosk-update.service", "member-kiosk-cleanup.service"}:
        assert service["User"] == "kiosk", f"{unit.name} runs as root"
        assert service["ExecStart"].startswith("/opt/member-kiosk/current/bin/kiosk ")


def test_hq_reminders_unit() -> None:
    """HQ's reminders run on a timer, reach the gateway and the database over the network,
    and get the gateway's token as a systemd credential (never in the environment)."""
    path = ROOT / "systemd/hq/member-kiosk-hq-remind.service"
    service = _unit(path)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].endswith(" hq messages remind")
    assert service["LoadCredential"].startswith("sms-gateway-token:")
    assert {"AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())
    assert "network-online.target" in _values(path, "Unit", "After")
    timer = _unit(ROOT / "systemd/hq/member-kiosk-hq-remind.timer")["Timer"]
    assert timer["OnCalendar"] and timer["Persistent"] == "true"
