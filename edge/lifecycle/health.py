"""The health check after an update: the new version's own ``kiosk doctor`` must pass."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.health import HealthState

REQUIRED = ("database", "printer", "scanner")


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)


def _as_owner_of(path: Path) -> dict[str, Any]:
    """Run as the data directory's owner when we are root, so no file there becomes root's."""
    if os.geteuid() != 0:
        return {}
    st = path.stat()
    if st.st_uid == 0:
        return {}
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
        groups = os.getgrouplist(name, st.st_gid)
    except KeyError:
        groups = [st.st_gid]
    return {"user": st.st_uid, "group": st.st_gid, "extra_groups": groups}


def run_health_check(
    kiosk: Path,
    data_dir: Path,
    *,
    config_path: Path | None = None,
    timeout: float = 120.0,
    required: Sequence[str] = REQUIRED,
) -> HealthReport:
    """``<kiosk> doctor --json``: every required check present and not failed, within time."""
    command = [str(kiosk), "--data-dir", str(data_dir)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    command += ["--json", "doctor"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=data_dir,
            **_as_owner_of(data_dir),
        )
    except subprocess.TimeoutExpired:
        return HealthReport(False, [f"kiosk doctor did not finish within {timeout:g} s"])
    except OSError as exc:
        return HealthReport(False, [f"cannot run {kiosk}: {exc}"])
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        checks = list(result["checks"])
    except (IndexError, ValueError, KeyError, TypeError):
        tail = (proc.stderr or proc.stdout).strip()[-500:]
        return HealthReport(False, [f"kiosk doctor exited {proc.returncode}: {tail}"])
    problems = []
    by_device = {str(c.get("device")): c for c in checks}
    for device in required:
        check = by_device.get(device)
        if check is None:
            problems.append(f"{device}: not checked")
        elif check.get("state") == HealthState.FAILED:
            problems.append(f"{device}: {check.get('reason') or 'failed'}")
    return HealthReport(not problems, problems, checks)
