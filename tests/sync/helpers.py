"""Shared pieces of the sync tests: agent processes, HQ config, convergence checks."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.protocol import DeviceStatus, Event, Topics
from edge.protocol.link import Inbound, LinkSettings, MqttLink, TlsFiles
from edge.services.personal import as_sent
from edge.services.replica import STORE_FEED_CURSOR
from edge.services.tx import get_meta
from edge.storage.models import Member, OutboxEvent
from hq.feeds import feed_head
from hq.models import CentralMember, MemberHolder, StoredEvent
from hq.service import HqConfig
from tests.cli_runner import run_kiosk
from tests.hq.database import hq_data_key_file, sqlite_hq_url

ROOT = Path(__file__).resolve().parents[2]


def fleet_json(tmp_path: Path, db_url: str, *options: str) -> dict:
    """``kiosk hq [options] fleet --json`` over HQ's database, as HQ staff run it."""
    conf = tmp_path / "hq.toml"
    conf.write_text("offline_alert_s = 1.0\n")
    out = run_kiosk(
        "hq", "--hq-config", str(conf), "--db", db_url, *options, "fleet", "--json", cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def hq_config(broker, tmp_path: Path, **extra) -> HqConfig:
    """HQ's settings for the test broker; a migrated SQLite database unless ``database_url``
    is given."""
    ca, cert, key = broker.tls("hq")
    if "database_url" not in extra:
        extra["database_url"] = sqlite_hq_url(tmp_path / "hq.db")
    extra.setdefault("data_key_file", hq_data_key_file())
    return HqConfig(
        broker_port=broker.port,
        ca_file=str(ca),
        cert_file=str(cert),
        key_file=str(key),
        command_key=str(broker.directory / "hq-command.key"),
        **extra,
    )


class AgentProcess:
    """``kiosk agent`` as a real process (so it can be SIGKILLed)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("NOTIFY_SOCKET", None)
        with (self.data_dir / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge.cli.main",
                    "--data-dir",
                    str(self.data_dir),
                    "agent",
                    "--log-level",
                    "WARNING",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class HqProcess:
    """``kiosk hq serve`` as a real process."""

    def __init__(
        self, broker, db_url: str, log: Path, client_id: str = "hq", data_key: str = ""
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "edge.cli.main",
            "hq",
            "--db",
            db_url,
            "--client-id",
            client_id,
            "--broker-port",
            str(broker.port),
            "--tls-dir",
            str(broker.directory),
            "--data-key",
            data_key or hq_data_key_file(),  # the key of the tests' own HqService
            "serve",
            "--log-level",
            "WARNING",
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def outbox_events(app: AppContext) -> list[Event]:
    """``app``'s outbox as the agent publishes it: each event with its seq, in order."""
    with app.db.read() as s:
        rows = s.execute(select(OutboxEvent.seq, OutboxEvent.payload).order_by(OutboxEvent.seq))
        return [
            Event.model_validate_json(f'{{"seq":{seq},{as_sent(app, p)[1:]}') for seq, p in rows
        ]


def drained(app: AppContext) -> Callable[[], bool]:
    """A check for wait_until: nothing left in ``app``'s outbox."""
    return lambda: pending(app) == 0


def caught_up(app: AppContext, engine) -> Callable[[], bool]:
    """A check for wait_until: ``app``'s replica cursor is at the head of its store's feed."""
    return lambda: cursor(app) == store_feed_head(engine, app.store_id)


def store_balances(engine, store_id: str) -> dict[str, int]:
    """HQ's balances of the members ``store_id`` holds (what its kiosks must agree with)."""
    with Session(engine) as s:
        rows = s.execute(
            select(CentralMember.id, CentralMember.balance)
            .join(MemberHolder, MemberHolder.member_id == CentralMember.id)
            .where(MemberHolder.store_id == store_id)
        )
        return dict(rows.tuples().all())


def store_feed_head(engine, store_id: str) -> int:
    with Session(engine) as s:
        return feed_head(s, store_id)


def pending(app: AppContext) -> int:
    with app.db.read() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.delivered_at.is_(None))
            )
            or 0
        )


def cursor(app: AppContext) -> int:
    with app.db.read() as s:
        return int(get_meta(s, STORE_FEED_CURSOR) or 0)


def hq_last_seq(engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.max(StoredEvent.hq_seq))) or 0)


def local_balances(app: AppContext) -> dict[str, int]:
    with app.db.read() as s:
        return dict(s.execute(select(Member.id, Member.balance)).tuples().all())


def outbox_ids(app: AppContext) -> list[str]:
    with app.db.read() as s:
        return list(s.scalars(select(OutboxEvent.event_id)))


def client(
    broker,
    cn: str,
    subs=(),
    *,
    client_id: str | None = None,
    tls: TlsFiles | None = None,
    certs=None,
    store_id: str = "S001",
) -> MqttLink:
    """A raw MQTT client of ``broker`` with the certificate of ``cn`` (from ``certs``' broker
    directory when given, e.g. another broker of the same CA), or with ``tls`` as given."""
    ca, cert, key = (certs or broker).tls(cn)
    topics = Topics()

    def status(state: str) -> Callable[[], bytes]:
        return lambda: DeviceStatus(
            device_id=cn, store_id=store_id, role="kiosk", state=state, at=datetime.now(UTC)
        ).to_bytes()

    return MqttLink(
        LinkSettings(
            client_id=client_id or f"{cn}-test",
            host="127.0.0.1",
            port=broker.port,
            tls=tls or TlsFiles(ca, cert, key),
            status_topic=topics.status(cn),
            online_payload=status("online"),
            offline_payload=status("offline"),
            subscriptions=tuple(subs),
            clean_start=True,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )
    )


def arriving(link: MqttLink, seconds: float) -> Iterator[Inbound]:
    """Each message ``link`` receives, acknowledged, as it comes, for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            item = link.inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(item, Inbound):
            link.ack(item)
            yield item


def received(link: MqttLink, seconds: float) -> list[Inbound]:
    """Every message ``link`` receives within ``seconds``, acknowledged."""
    return list(arriving(link, seconds))


def row_counts(app: AppContext, *tables: type) -> tuple[int | None, ...]:
    """How many rows each of ``tables`` holds in ``app``'s database: a refusal's test
    checks that these stay as they were, the audit and the outbox among them."""
    with app.db.read() as s:
        return tuple(s.scalar(select(func.count()).select_from(table)) for table in tables)
