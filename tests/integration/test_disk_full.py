"""A full disk, for real: the data directory on a small tmpfs, filled up with a file.

Registering, accruing and backing up are each refused in one line that says the disk is full,
what was not done and that nothing was changed; the database is the same byte for byte once
space is freed and ``kiosk ledger verify`` passes. The touchscreen says so in its own words
(Chinese and English), ``kiosk doctor`` reports the free space, and HQ's ``update`` command
answers ``failed``/``disk_full`` with no partial download left behind.

Both ways SQLite meets a full disk are covered: with the kiosk running (its connection holds
the ``-shm`` file open, a write fails with SQLITE_FULL, "database or disk is full") and with
nothing else running (opening the database cannot create the ``-shm`` file: SQLITE_IOERR).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.disk import fill
from tests.forked_kiosk import KioskForks

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_CONFIG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")

REPO = Path(__file__).resolve().parents[2]
PHONE, OTHER_PHONE = "13800138000", "13900139000"
CARD = "2900000000018"
FULL = "error: the disk is full: "
NOTHING_CHANGED = " and nothing was changed (free some space in "


class Console:
    """``kiosk`` as a person runs it on the device: each command a process of its own, forked
    from one that imported the product once (:mod:`tests.forked_kiosk`)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        env = {**os.environ, "KIOSK_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
        env.pop("KIOSK_CONFIG", None)
        env.pop("KIOSK_DEBUG", None)
        self.forks = KioskForks(env)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        proc = self.forks.run(*args, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, (args, out, err)
        return out

    def refused(self, *args: str) -> str:
        """The one line of a refusal (exit 1, as every refusal: not 70, an internal error)."""
        code, out, err = self(*args)
        assert code == 1, (args, code, out, err)
        lines = err.splitlines()
        assert len(lines) == 1, err
        return lines[0]


# what the station's monitoring writes on its own (device health, the camera's frame rate)
HOUSEKEEPING = ('"peripheral_health"', '"meta"')


def contents(db: Path, leaving_out: tuple[str, ...] = ()) -> list[str]:
    """The whole database as SQL, but for the rows of the tables ``leaving_out``."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [
            line
            for line in conn.iterdump()
            if not line.startswith(tuple(f"INSERT INTO {t}" for t in leaving_out))
        ]


@pytest.fixture
def console() -> Iterator[Callable[[Path], Console]]:
    """Makes a :class:`Console` on a data directory; their fork servers stop after the test."""
    made: list[Console] = []

    def make(data_dir: Path) -> Console:
        made.append(Console(data_dir))
        return made[-1]

    yield make
    for one in made:
        one.forks.close()


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("running", [True, False], ids=["kiosk-running", "kiosk-stopped"])
def test_a_full_disk_refuses_writes_in_one_line_and_changes_nothing(small_disk, running, console):
    data = small_disk / "data"
    kiosk = console(data)
    kiosk.ok("db", "upgrade")
    kiosk.ok("member", "register", "--phone", PHONE, "--consent")
    kiosk.ok("points", "accrue", "--card", CARD, "--amount-cents", "12800", "--ref", "R-1")
    db = data / "kiosk.db"
    before = contents(db)
    backups = data / "backups"
    # the touchscreen app keeps the database open while the kiosk runs
    holder = sqlite3.connect(db) if running else None
    if holder is not None:
        holder.execute("SELECT count(*) FROM member").fetchall()
    filler = fill(small_disk)
    try:
        line = kiosk.refused("member", "register", "--phone", OTHER_PHONE, "--consent")
        assert line.startswith(f"{FULL}kiosk member register was not done{NOTHING_CHANGED}")
        assert str(data) in line
        line = kiosk.refused(
            "points", "accrue", "--card", CARD, "--amount-cents", "5000", "--ref", "R-2"
        )
        assert line.startswith(f"{FULL}kiosk points accrue was not done{NOTHING_CHANGED}")
        line = kiosk.refused("backup", "create")
        assert line.startswith(f"{FULL}no backup was made{NOTHING_CHANGED}"), line
        assert not [f for f in files_under(backups)], "a partial backup was left behind"

        code, out, _err = kiosk("doctor", "--sim", "--json")
        assert code == 1
        storage = next(c for c in json.loads(out)["checks"] if c["device"] == "storage")
        assert storage["state"] == "failed" and storage["code"] == "disk_full"
        assert storage["free_bytes"] < 1 << 20 and storage["total_bytes"] > 0
    finally:
        if holder is not None:
            holder.close()
        filler.unlink()
    assert contents(db) == before
    assert kiosk.ok("ledger", "verify").startswith("OK")
    assert files_under(backups) == []
    # with space again, the same commands work
    kiosk.ok("member", "register", "--phone", OTHER_PHONE, "--consent")
    kiosk.ok("backup", "create")


def test_a_member_code_on_a_full_disk_is_refused_and_stays_usable(small_disk, console):
    """The replay guard cannot record the code's nonce: the code is not accepted (it could be
    shown again otherwise) and stays good for one use once there is space again."""
    data = small_disk / "data"
    kiosk = console(data)
    kiosk.ok("db", "upgrade")
    kiosk.ok("member", "register", "--phone", PHONE, "--consent")
    first = json.loads(kiosk.ok("member", "code", "--card", CARD, "--json"))["code"]
    kiosk.ok("member", "identify", first)  # nonces.db is there, as on a kiosk in service
    code = json.loads(kiosk.ok("member", "code", "--card", CARD, "--json"))["code"]
    nonces_before = contents(data / "nonces.db")
    # the touchscreen keeps the ledger open: the lookup can read it, the nonce is the write
    holder = sqlite3.connect(data / "kiosk.db")
    holder.execute("SELECT count(*) FROM member").fetchall()
    filler = fill(small_disk)
    try:
        line = kiosk.refused("member", "identify", code)
    finally:
        holder.close()
        filler.unlink()
    assert line.startswith(
        f"{FULL}the member code was not accepted (use the card or the phone number)"
        f"{NOTHING_CHANGED}{data}"
    ), line
    assert contents(data / "nonces.db") == nonces_before
    assert json.loads(kiosk.ok("member", "identify", code, "--json"))["card_no"] == CARD
    assert "already used" in kiosk.refused("member", "identify", code)


def test_the_touchscreen_says_the_disk_is_full_as_a_refusal(small_disk, tmp_path):
    from edge.services.members import register_member
    from edge.station.center import open_center
    from kiosk.i18n.catalog import load_catalog
    from kiosk.viewmodels.base import InlineRunner
    from kiosk.viewmodels.register import RegisterViewModel
    from kiosk.viewmodels.session import SessionViewModel

    center = open_center(small_disk / "data", simulate=True)
    try:
        register_member(center.app, PHONE, consent=True)  # a kiosk in service (its keys made)
        before = contents(small_disk / "data" / "kiosk.db", HOUSEKEEPING)
        vm = RegisterViewModel(center, SessionViewModel(warn_s=30, clear_s=45), InlineRunner())
        vm.start("en")
        vm.phone, vm.step, vm.consent = OTHER_PHONE, "terms", True
        filler = fill(small_disk)
        try:
            vm.next()
        finally:
            filler.unlink()
        assert vm.step == "terms" and vm.notice_kind == "warn"
        assert vm.notice == "The kiosk's storage is full: nothing was done or changed. " + (
            "Please ask the staff."
        )
        zh = load_catalog("zh_CN", tmp_path / "mo").gettext(vm.notice)
        assert zh == "自助机存储空间已满：本次操作未执行，也未做任何更改。请联系工作人员。"
        assert contents(small_disk / "data" / "kiosk.db", HOUSEKEEPING) == before
        vm.next()  # with space again, the same kiosk registers the member
        assert vm.step == "done" and vm.outcome.card.dispensed
    finally:
        center.close()


# -- HQ's update command: the download runs out of space --------------------------------------


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Downloads:
    """HQ's download server on 127.0.0.1, serving a directory."""

    def __init__(self, root: Path) -> None:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_update_download_that_runs_out_of_space_fails_disk_full_and_leaves_nothing(
    small_disk, tmp_path
):
    from edge.app import AppContext
    from edge.config import KioskConfig
    from edge.security.keys import load_public_key
    from edge.sync.commands import CommandRunner
    from hq.commands import sign_command

    data = small_disk / "data"
    (data / "keys").mkdir(parents=True, mode=0o700)
    command_key, update_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (data / "keys" / "hq-command.pub").write_bytes(_public_pem(command_key))
    (data / "keys" / "hq-update.pub").write_bytes(_public_pem(update_key))
    www = tmp_path / "www"
    www.mkdir()
    bundle = www / "member-kiosk-9.9.9.tar"
    bundle.write_bytes(os.urandom(3 * 1024 * 1024))  # more than the space left
    server = Downloads(www)
    app = AppContext.open(data, config=KioskConfig())
    try:
        runner = CommandRunner(app, load_public_key(data / "keys" / "hq-command.pub"))
        args: dict[str, str | int | bool] = {
            "url": server.url(bundle.name),
            "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest(),
            "size": bundle.stat().st_size,
            "version": "9.9.9",
        }
        command = sign_command(command_key, app.device_id, "update", args)
        filler = fill(small_disk, leave=1024 * 1024)
        try:
            free = shutil.disk_usage(small_disk).free
            result = runner.handle(command, datetime.now(UTC))
            # the partial download is gone: the space it took is free again
            assert shutil.disk_usage(small_disk).free >= free - 64 * 1024
        finally:
            filler.unlink()
        assert (result.status, result.detail["error"]) == ("failed", "disk_full"), result.detail
        message = result.detail["message"]
        assert message.startswith(
            "the disk is full: the update to 9.9.9 was not downloaded and nothing was changed"
        ), message
        assert files_under(data / "updates") in ([], ["downloads"], ["downloads", "inbox"])
        assert [p for p in (data / "updates").rglob("*") if p.is_file()] == []
        # answered from its record when HQ asks again
        again = runner.handle(command, datetime.now(UTC))
        assert (again.status, again.detail["error"]) == ("failed", "disk_full")
    finally:
        app.close()
        server.close()
