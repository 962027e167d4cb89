"""An update that did not install is a fault in the device's telemetry, so that HQ's rollout
of that version counts the device as failed: ``update:<rolled_back|refused>:<version>:<when>``
while it is the newest attempt in ``updates/history.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from edge.lifecycle.update import update_fault
from edge.sync.telemetry import collect


def history(data_dir: Path, *entries: Mapping[str, object] | str) -> None:
    log = data_dir / "updates" / "history.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        for entry in entries:
            out.write((entry if isinstance(entry, str) else json.dumps(entry)) + "\n")


ROLLED_BACK = {
    "at": "2026-12-08T10:15:00.250000+00:00",
    "bundle": "20261208T101400123456Z-member-kiosk-1.0.3.tar",
    "status": "rolled_back",
    "version": "1.0.3",
    "previous": "1.0.1",
    "problems": ["scanner: not checked"],
}
INSTALLED = {**ROLLED_BACK, "at": "2026-12-09T09:00:00+00:00", "status": "installed"}


def test_no_history_and_an_installed_update_are_no_fault(tmp_path):
    assert update_fault(tmp_path) is None
    history(tmp_path, ROLLED_BACK, INSTALLED)
    assert update_fault(tmp_path) is None


def test_the_newest_attempt_rolled_back_is_a_fault_naming_its_version_and_start(tmp_path):
    history(tmp_path, INSTALLED, ROLLED_BACK)
    assert update_fault(tmp_path) == "update:rolled_back:1.0.3:2026-12-08T10:15:00Z"


@pytest.mark.parametrize(
    ("bundle", "version"),
    [
        ("20261208T101400123456Z-member-kiosk-1.0.4.tar", "1.0.4"),  # queued for HQ's command
        ("20261208T101400123456Z-my-copy-1.0.4.tar", "unknown"),  # put there by hand
        ("member-kiosk-1.0.4-0.tar", "unknown"),
    ],
)
def test_a_bundle_the_installer_refused_is_a_fault_too(tmp_path, bundle, version):
    history(
        tmp_path,
        {"at": "2026-12-08T10:15:00+00:00", "bundle": bundle, "status": "refused",
         "problems": ["lock_timeout: the kiosk stayed busy"]},
    )  # fmt: skip
    assert update_fault(tmp_path) == f"update:refused:{version}:2026-12-08T10:15:00Z"


def test_an_unreadable_last_line_is_no_fault(tmp_path):
    history(tmp_path, ROLLED_BACK, '{"at": "not a time", "status": "rolled_back"}')
    assert update_fault(tmp_path) is None
    history(tmp_path, "{half a line")
    assert update_fault(tmp_path) is None


def test_a_long_history_is_read_from_its_end(tmp_path):
    history(tmp_path, *([INSTALLED] * 2000), ROLLED_BACK)
    assert (tmp_path / "updates/history.jsonl").stat().st_size > 100_000
    assert update_fault(tmp_path) == "update:rolled_back:1.0.3:2026-12-08T10:15:00Z"


def test_telemetry_reports_the_fault(app):
    assert not any(f.startswith("update:") for f in collect(app, None).faults)
    history(app.data_dir, ROLLED_BACK)
    assert "update:rolled_back:1.0.3:2026-12-08T10:15:00Z" in collect(app, None).faults
