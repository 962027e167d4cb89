"""The member-code replay guard across processes: a crash forgets no used code, and two
processes presenting the same codes at once let each one through exactly once.

The processes are real interpreters (``code_worker``) opening the same data directory, as the
touchscreen and a console command do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import Refusal
from edge.security.codes import mint_member_code
from edge.services.members import identify, register_member
from edge.storage.nonces import NONCE_FILE

REPO = Path(__file__).resolve().parents[2]
RACE_CODES = 200


def _env() -> dict[str, str]:
    """The environment without the developer's own KIOSK_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.code_worker", *args],
        cwd=REPO,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _member(data_dir: Path) -> tuple[str, AppContext]:
    app = AppContext.open(data_dir, config=KioskConfig())
    return register_member(app, "13900139000", consent=True, actor="test").card_no, app


def _codes(app: AppContext, card: str, count: int) -> list[str]:
    key = app.keys.member_code_signing_key("")
    now = datetime.now(UTC)
    return [mint_member_code(key, card, now) for _ in range(count)]


def test_a_code_used_by_a_process_killed_right_after_is_refused_in_the_next(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    card, app = _member(data_dir)
    try:
        code, other = _codes(app, card, 2)
    finally:
        app.close()

    first = _worker("hold", str(data_dir), code)
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line == "identified\n", line + first.stderr.read()
        first.send_signal(signal.SIGKILL)  # no close, no checkpoint: the WAL is all there is
        first.wait(timeout=30)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL

    second = _worker("hold", str(data_dir), code)
    try:
        assert second.stdout is not None
        line = second.stdout.readline()
        assert line == "refused code_replayed\n", line + second.stderr.read()
    finally:
        second.kill()
        second.wait(timeout=30)

    app = AppContext.open(data_dir, config=KioskConfig())
    try:
        with pytest.raises(Refusal) as err:
            identify(app, code)
        assert err.value.code == "code_replayed"
        assert identify(app, other).card_no == card  # an unused code of the same member passes
    finally:
        app.close()


def test_two_processes_presenting_the_same_codes_let_each_through_exactly_once(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    card, app = _member(data_dir)
    try:
        codes = _codes(app, card, RACE_CODES)
    finally:
        app.close()
    assert not (data_dir / NONCE_FILE).exists()  # the racers create it too
    codes_file = tmp_path / "codes.txt"
    codes_file.write_text("\n".join(codes) + "\n", encoding="ascii")
    go = tmp_path / "go"

    racers = [_worker("race", str(data_dir), str(codes_file), str(go)) for _ in range(2)]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline() == "ready\n", racer.stderr.read()
        go.touch()
        answers = []
        for racer in racers:
            out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err
            answers.append(json.loads(out))
    finally:
        for racer in racers:
            racer.kill()
            racer.wait(timeout=30)

    for i, outcomes in enumerate(zip(*answers, strict=True)):
        assert sorted(outcomes) == ["code_replayed", "ok"], (i, outcomes)
