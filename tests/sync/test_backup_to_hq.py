"""Backups travel to HQ over MQTT in chunks, are acknowledged, and HQ's copy restores a device."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.lifecycle.backup import BACKUP_DIR, BackupInfo, create_backup, list_backups
from edge.protocol import BackupAck, BackupChunk, BackupManifest, Topics, decode
from edge.services.members import register_member
from edge.services.points import accrue_purchase
from edge.services.verify import verify_ledger
from edge.sync.agent import Agent
from edge.sync.backup_transfer import manifest_message
from hq.backups import BackupStore
from hq.models import FleetDevice
from hq.service import HqService
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import ROOT, client, fleet_json, hq_config, local_balances, received

T = Topics()


def busy_kiosk(app: AppContext, n: int = 12) -> None:
    """Members with purchases: a ledger worth restoring."""
    for i in range(n):
        card = register_member(app, f"1390013{i:04d}", consent=True, name=f"M{i}").card_no
        accrue_purchase(app, card, 10_000 + 137 * i, f"R-{i}")
        accrue_purchase(app, card, 2_000 + 11 * i, f"S-{i}")


def backup_now(app: AppContext) -> BackupInfo:
    return create_backup(
        app.data_dir / "kiosk.db",
        app.data_dir / BACKUP_DIR,
        store_id=app.store_id,
        device_id=app.device_id,
    )


def delivered(app: AppContext, info: BackupInfo) -> bool:
    found = [b for b in list_backups(app.data_dir / BACKUP_DIR) if b.path == info.path]
    return bool(found) and found[0].delivered_at is not None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hq_copy(hq: HqService, info: BackupInfo) -> Path:
    return hq.config.backups_path() / info.store_id / info.device_id / info.path.name


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_backup_reaches_hq_whole_and_restores_a_replacement(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    agent.backups.chunk_bytes = 2048  # many chunks from a small test database
    busy_kiosk(app)
    older = backup_now(app)
    info = backup_now(app)
    runners = [Runner(hq.run), Runner(agent.run)]
    try:
        wait_until(lambda: delivered(app, info), 60, "HQ's ack of the backup")
    finally:
        for r in reversed(runners):
            r.stop()
    copy = hq_copy(hq, info)
    assert sha256(copy) == sha256(info.path) == info.sha256
    assert info.size > 4 * 2048  # it really went in several chunks
    assert agent.backups.chunks_sent >= -(-info.size // 2048)
    # only the newest unsent backup matters: the older one was never sent
    assert not delivered(app, older)
    assert not hq_copy(hq, older).exists()
    manifest = json.loads(copy.with_name(copy.name + ".json").read_text())
    assert manifest["sha256"] == info.sha256 and manifest["ledger_entries"] == info.ledger_entries
    # HQ's fleet view says when the newest backup it holds was made
    devices = fleet_json(tmp_path, hq.config.database_url)["devices"]
    kiosk = next(d for d in devices if d["device_id"] == "K001")
    assert kiosk["last_backup_at"] == info.created_at.isoformat()  # ISO 8601, as kiosk --json
    # ... and HQ noted it as it stored it, for the console's fleet page
    with Session(hq.engine) as s:
        noted = s.scalar(select(FleetDevice.last_backup_at).where(FleetDevice.device_id == "K001"))
    assert noted == info.created_at
    # backups kept elsewhere: --backup-dir names the place
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(hq.config.backups_path(), elsewhere)
    shutil.rmtree(hq.config.backups_path())
    for where, expected in ((elsewhere, info.created_at.isoformat()), (tmp_path / "none", None)):
        devices = fleet_json(tmp_path, hq.config.database_url, "--backup-dir", str(where))
        kiosk = next(d for d in devices["devices"] if d["device_id"] == "K001")
        assert kiosk["last_backup_at"] == expected
    shutil.copytree(elsewhere, hq.config.backups_path())
    assert not list((hq.config.backups_path() / ".incoming").glob("*"))

    # A replacement device: the chain's keys (data.key) from HQ, HQ's copy of the backup.
    fresh = tmp_path / "replacement"
    fresh.mkdir()
    shutil.copytree(app.data_dir / "keys", fresh / "keys")
    shutil.copy(app.data_dir / "config.toml", fresh / "config.toml")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    restore = ["backup", "restore", str(copy)]
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "--data-dir", str(fresh), *restore],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    restored = open_app(fresh)
    try:
        report = verify_ledger(restored)
        assert report.ok, report.problems
        assert local_balances(restored) == local_balances(app)
        assert len(local_balances(restored)) == 12
    finally:
        restored.close()
        app.close()


def test_a_broker_restart_mid_transfer_still_delivers_the_whole_backup(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Agent(app)
    agent.backups.chunk_bytes = 1024
    agent.backups.per_turn = 1
    busy_kiosk(app)
    info = backup_now(app)
    count = -(-info.size // 1024)
    assert count >= 8
    runners = [Runner(hq.run), Runner(agent.run)]
    try:
        wait_until(lambda: agent.backups.chunks_sent >= 3, 30, "the transfer to start")
        broker.kill()
        sent_before = agent.backups.chunks_sent
        assert sent_before < count, "the transfer finished before the broker went away"
        time.sleep(1.0)
        broker.start()
        wait_until(lambda: delivered(app, info), 90, "HQ's ack after the restart")
    finally:
        for r in reversed(runners):
            r.stop()
    assert sha256(hq_copy(hq, info)) == info.sha256
    assert agent.backups.chunks_sent > count  # chunks went again after the reconnect
    assert hq.backups.stored == 1


def _chunk(data: bytes, sha: str, *, size: int | None = None) -> BackupChunk:
    name = "ledger-S001-K001-20260101T000000000000Z.db.gz"
    size = len(data) if size is None else size
    return BackupChunk(
        device_id="K001",
        name=name,
        sha256=sha,
        size=size,
        chunk_bytes=4096,
        index=0,
        count=1,
        data=base64.b64encode(data).decode(),
        manifest=BackupManifest(
            file=name,
            sha256=sha,
            size=size,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            store_id="S001",
            device_id="K001",
            ledger_entries=1,
            members=1,
        ),
    )


def test_forged_or_inconsistent_chunks_are_refused_and_nothing_is_stored(broker, tmp_path):
    hq = HqService(hq_config(broker, tmp_path))
    forger = client(broker, "K001", subs=[(T.backup_ack("K001"), 1)], client_id="K001-forger")
    runner = Runner(hq.run)
    forger.start()
    try:
        assert forger.wait_connected(10) and hq.link.wait_connected(10)
        time.sleep(0.3)
        data = os.urandom(3000)
        wrong_sha = _chunk(data, hashlib.sha256(b"something else").hexdigest())
        forger.publish(T.backup("K001"), wrong_sha.to_bytes(), qos=1)
        answers = [decode(BackupAck, m.payload) for m in received(forger, 3.0)]
        assert len(answers) == 1 and not answers[0].ok, answers
        assert "SHA-256" in answers[0].reason

        good = _chunk(data, hashlib.sha256(data).hexdigest())
        body = json.loads(good.to_bytes())
        inconsistent = [
            dict(body, count=3),  # 3000 bytes in chunks of 4096 are one chunk
            dict(body, index=1),  # past the count
            dict(body, data=base64.b64encode(data[:100]).decode()),  # short of the size
            dict(body, data="not base64!"),
            dict(body, manifest=dict(body["manifest"], device_id="K002")),
        ]
        dropped = hq.counters.dropped
        for payload in inconsistent:
            forger.publish(T.backup("K001"), json.dumps(payload).encode(), qos=1)
        assert received(forger, 2.0) == []  # no ack for what was never a backup
        wait_until(lambda: hq.counters.dropped == dropped + len(inconsistent), 10, "drops")
        assert stored_files(hq.config.backups_path()) == []
        assert hq.backups.stored == 0 and hq.backups.refused == 1
    finally:
        forger.close()
        runner.stop()


def test_a_device_cannot_publish_on_another_devices_backup_topic(broker):
    observer = client(broker, "hq", subs=[("mck/v1/#", 1)])
    intruder = client(broker, "K002", client_id="K002")
    observer.start()
    intruder.start()
    try:
        assert observer.wait_connected(10) and intruder.wait_connected(10)
        time.sleep(0.3)
        intruder.publish(T.backup("K001"), b'{"v":1}', qos=1)
        intruder.publish(T.backup_ack("K001"), b'{"v":1}', qos=1)
        intruder.publish(T.backup("K002"), b"own topic", qos=1)  # allowed: the control
        topics = [m.topic for m in received(observer, 1.5) if "/backup" in m.topic]
        assert topics == [T.backup("K002")], topics
    finally:
        intruder.close()
        observer.close()


def test_the_store_bridge_carries_backups_and_acks(chain, tmp_path):
    hq = HqService(hq_config(chain.hq, tmp_path))
    data = make_data_dir(tmp_path, chain.store, "K001", "S001", 1, hq_broker=chain.hq)
    app = open_app(data)
    agent = Agent(app)
    agent.backups.chunk_bytes = 4096
    busy_kiosk(app, 4)
    info = backup_now(app)
    runners = [Runner(hq.run), Runner(agent.run)]
    try:
        wait_until(lambda: delivered(app, info), 60, "HQ's ack through the bridge")
    finally:
        for r in reversed(runners):
            r.stop()
        app.close()
    assert sha256(hq_copy(hq, info)) == info.sha256


def _chunks(info: BackupInfo, chunk_bytes: int) -> list[BackupChunk]:
    data = info.path.read_bytes()
    count = -(-len(data) // chunk_bytes)
    manifest = manifest_message(info)
    return [
        BackupChunk(
            device_id=info.device_id,
            name=info.path.name,
            sha256=info.sha256,
            size=info.size,
            chunk_bytes=chunk_bytes,
            index=i,
            count=count,
            data=base64.b64encode(data[i * chunk_bytes : (i + 1) * chunk_bytes]).decode(),
            manifest=manifest,
        )
        for i in range(count)
    ]


def test_hq_takes_chunks_in_any_order_twice_over_and_keeps_the_last_n(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    store = BackupStore(tmp_path / "hq-backups", keep=2)
    now = datetime.now(UTC)
    try:
        busy_kiosk(app, 4)
        made = [backup_now(app) for _ in range(3)]
    finally:
        app.close()
    first = _chunks(made[0], 1024)
    assert len(first) >= 3
    # out of order, with a repeat: nothing is acknowledged until every chunk is in
    order = [first[-1], first[0], first[0], *first[1:-1]]
    acks = [store.receive(c, now) for c in order]
    assert all(a is None for a in acks[:-1])
    last = acks[-1]
    assert last is not None and last.ok and last.sha256 == made[0].sha256
    copy = store.device_dir("S001", "K001") / made[0].path.name
    assert sha256(copy) == made[0].sha256
    # a resend of a stored backup is acknowledged again, not stored twice
    again = store.receive(first[1], now)
    assert again is not None and again.ok and store.stored == 1
    for info in made[1:]:
        for chunk in _chunks(info, 4096):
            ack = store.receive(chunk, now)
        assert ack is not None and ack.ok
    kept = [b.path.name for b in store.backups("S001", "K001")]
    assert kept == [made[1].path.name, made[2].path.name]
    assert not copy.exists() and not copy.with_name(copy.name + ".json").exists()
