"""HQ's ``update`` command through a real broker: the device fetches the bundle HQ names from a
web server on 127.0.0.1, checks its size, SHA-256 and signature, and queues it for the
installer; tampered bundles and bad commands queue nothing."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from edge import __version__
from edge.config import KioskConfig
from edge.lifecycle.update import drain_inbox
from edge.protocol import Command, CommandResult, Telemetry, Topics, decode
from edge.protocol.link import Inbound, MqttLink
from edge.security.bundle import build_bundle
from edge.security.keys import load_public_key
from edge.services.tx import transaction
from edge.storage.command_models import RunningCommand
from edge.sync.agent import Agent
from edge.sync.commands import MAX_STARTS, CommandRunner
from hq.cli import update_command as hq_update
from hq.commands import (
    bundle_facts,
    load_command_key,
    send_command,
    sign_command,
    update_command,
)
from hq.service import HqConfig, hq_link
from tests.cli_runner import Ran, run_kiosk
from tests.lifecycle.releases import shared_release, update_key
from tests.sync.conftest import (
    Broker,
    Runner,
    make_data_dir,
    open_app,
    start_broker,
    wait_until,
)
from tests.sync.helpers import ROOT, AgentProcess, hq_config


class BundleServer:
    """HQ's download server: serves a directory on 127.0.0.1, logs every request, and can
    hold back the body of ``/slow/...`` requests for ``delay_s``. A ``/halves/...`` request
    gets the first half of the file, sets ``half_sent`` and the rest once ``release`` is
    set."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.delay_s = 0.0
        self.half_sent = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path.startswith("/slow/"):
                    time.sleep(server.delay_s)
                    self.path = self.path[len("/slow") :]
                if self.path.startswith("/halves/"):
                    body = (root / self.path[len("/halves/") :]).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.half_sent.set()
                    server.release.wait(30)
                    with contextlib.suppress(OSError):  # the device went away (killed)
                        self.wfile.write(body[len(body) // 2 :])
                    return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Site:
    broker: Broker
    server: BundleServer
    hq: HqConfig
    command_key: Ed25519PrivateKey
    update_key: Ed25519PrivateKey
    update_pub: Path
    work: Path

    def kiosk(self, device_id: str, store_id: str, card_start: int) -> Path:
        data = make_data_dir(self.work, self.broker, device_id, store_id, card_start)
        (data / "keys" / "hq-update.pub").write_bytes(self.update_pub.read_bytes())
        return data

    def send(self, command: Command, timeout_s: float = 30.0) -> CommandResult:
        return send_command(self.hq, command, timeout_s=timeout_s)


def tiny_wheel(directory: Path, version: str) -> Path:
    """A well-formed wheel file, enough for bundles that are checked but never installed."""
    path = directory / f"member_center_kiosk-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("edge_probe.py", f"version = {version!r}\n")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("update-command")
    broker = start_broker(work / "broker")
    (work / "www").mkdir()
    server = BundleServer(work / "www")
    key, pub = update_key(work)
    try:
        yield Site(
            broker,
            server,
            hq_config(broker, work),
            load_command_key(broker.directory / "hq-command.key"),
            key,
            pub,
            work,
        )
    finally:
        server.close()
        broker.stop()


def wait_answering(site: Site, device_id: str, timeout_s: float = 30.0) -> None:
    """Waits until ``device_id``'s agent answers a ping: then it is subscribed to its
    commands."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(TimeoutError):
            if site.send(sign_command(site.command_key, device_id, "ping"), 5).status == "done":
                return
        assert time.monotonic() < deadline, f"{device_id}'s agent never answered"


@pytest.fixture(scope="module")
def kiosk(site) -> Iterator[Path]:
    """K001 with its agent running in this process for the whole module."""
    data = site.kiosk("K001", "S001", 1)
    app = open_app(data)
    runner = Runner(Agent(app).run)
    try:
        wait_answering(site, "K001")
        yield data
    finally:
        runner.stop()
        app.close()


def queued(data: Path) -> list[Path]:
    inbox = data / "updates" / "inbox"
    return sorted(inbox.iterdir()) if inbox.is_dir() else []


def left_behind(data: Path) -> list[Path]:
    downloads = data / "updates" / "downloads"
    return sorted(downloads.iterdir()) if downloads.is_dir() else []


@pytest.fixture
def inbox(kiosk) -> Iterator[Path]:
    """K001's data directory, its update inbox emptied after the test."""
    yield kiosk
    for path in queued(kiosk):
        path.unlink()


def small_bundle(site: Site, version: str, signer: Ed25519PrivateKey | None = None) -> Path:
    name = f"kiosk-{version}-{secrets.token_hex(3)}.tar"
    work = site.work / name.removesuffix(".tar")
    work.mkdir()
    build_bundle(
        [tiny_wheel(work, version)], version, signer or site.update_key, site.server.root / name
    )
    return site.server.root / name


def offer(site: Site, bundle: Path, **changed: str | int) -> Command:
    """An update command for ``bundle`` on the test server, with any argument changed."""
    facts = bundle_facts(bundle)
    args: dict[str, str | int | bool] = {
        "url": site.server.url(bundle.name),
        "sha256": facts.sha256,
        "size": facts.size,
        "version": facts.version,
    }
    args.update(changed)
    return sign_command(site.command_key, "K001", "update", args)


# -- a bundle HQ signed is fetched, checked and queued; the loop keeps serving meanwhile --------


def test_an_update_command_queues_the_bundle_it_names(site, inbox):
    bundle = small_bundle(site, "9.9.1")
    command = update_command(site.command_key, "K001", bundle, site.server.url(bundle.name))
    result = site.send(command)
    assert result.status == "done", result.detail
    assert (result.detail["queued"], result.detail["version"]) == (True, "9.9.1")
    (waiting,) = queued(inbox)
    assert waiting.name == result.detail["bundle"]
    assert waiting.read_bytes() == bundle.read_bytes()
    assert left_behind(inbox) == []
    # the same transaction again is answered from the record: no second download or queueing
    fetched = site.server.requests.count(f"/{bundle.name}")
    again = site.send(command)
    assert again.status == "done" and again.detail["replayed"] is True
    assert site.server.requests.count(f"/{bundle.name}") == fetched == 1
    assert len(queued(inbox)) == 1


def test_a_downloaded_bundle_is_moved_into_the_inbox_not_written_again(site, inbox):
    bundle = small_bundle(site, "9.9.8")
    command = update_command(
        site.command_key, "K001", bundle, site.server.url(f"halves/{bundle.name}")
    )
    results: queue.Queue[CommandResult] = queue.Queue()
    site.server.half_sent.clear()
    site.server.release.clear()
    sending = threading.Thread(target=lambda: results.put(site.send(command)))
    sending.start()
    try:
        assert site.server.half_sent.wait(15), "the device never asked for the bundle"
        deadline = time.monotonic() + 10
        while not left_behind(inbox):  # the device opens its download file
            assert time.monotonic() < deadline, "no download file appeared"
            time.sleep(0.02)
        (downloading,) = left_behind(inbox)  # the download in progress, half written
        written = downloading.stat().st_ino
    finally:
        site.server.release.set()
        sending.join(30)
    result = results.get(timeout=1)
    assert result.status == "done", result.detail
    (waiting,) = queued(inbox)
    assert waiting.read_bytes() == bundle.read_bytes()
    # the very file the download wrote, renamed into the inbox: no copy, nothing left behind
    assert waiting.stat().st_ino == written
    assert left_behind(inbox) == []


def test_the_agent_answers_other_commands_while_a_bundle_downloads(site, inbox):
    bundle = small_bundle(site, "9.9.2")
    hold_s = 4.0  # the server holds the bundle back this long once asked for it
    site.server.delay_s = hold_s
    results: queue.Queue[tuple[str, CommandResult, float]] = queue.Queue()

    def send(name: str, command: Command) -> None:
        results.put((name, site.send(command), time.monotonic()))

    try:
        slow = update_command(
            site.command_key, "K001", bundle, site.server.url(f"slow/{bundle.name}")
        )
        updating = threading.Thread(target=send, args=("update", slow))
        updating.start()
        deadline = time.monotonic() + 10
        while f"/slow/{bundle.name}" not in site.server.requests:
            assert time.monotonic() < deadline, "the device never asked for the bundle"
            time.sleep(0.05)
        started = time.monotonic()
        send("ping", sign_command(site.command_key, "K001", "ping"))
        updating.join(30)
    finally:
        site.server.delay_s = 0.0
    (first, ping, ping_at), (second, update, update_at) = results.get(), results.get()
    assert (first, second) == ("ping", "update")
    # answered while the server still held the bundle back: not queued behind the download
    assert ping.status == "done" and ping_at - started < hold_s
    assert update.status == "done" and update.detail["version"] == "9.9.2"
    assert update_at > ping_at
    assert [p.name for p in queued(inbox)] == [update.detail["bundle"]]


def hq_cli(site: Site, *args: str) -> Ran:
    """``kiosk hq ARGS`` against the site's broker, as an operator at HQ runs it."""
    return run_kiosk(
        "hq", "--db", site.hq.database_url, "--broker-port", str(site.broker.port),
        "--tls-dir", str(site.broker.directory), *args, cwd=ROOT,
    )  # fmt: skip


def test_hq_update_that_outwaits_its_wait_says_how_to_read_the_result_later(site, inbox):
    bundle = small_bundle(site, "9.8.1")
    url = site.server.url(f"slow/{bundle.name}")
    site.server.delay_s = 5.0
    try:
        early = hq_cli(site, "update", "K001", str(bundle), "--url", url, "--wait", "2")
    finally:
        site.server.delay_s = 0.0
    assert early.returncode == 1, early.stdout + early.stderr
    (line,) = early.stderr.strip().splitlines()  # one clear line, no traceback
    assert line.startswith("error: no answer from K001 in 2 s"), line
    transaction = re.search(r"--transaction (\S+)", line)
    assert transaction is not None, line
    deadline = time.monotonic() + 30
    while not queued(inbox):  # the device goes on and queues the bundle
        assert time.monotonic() < deadline, "the bundle was never queued"
        time.sleep(0.1)

    again = hq_cli(
        site, "update", "K001", str(bundle), "--url", url, "--transaction", transaction[1]
    )
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)
    assert result["transaction"] == transaction[1]
    assert (result["status"], result["detail"]["version"]) == ("done", "9.8.1")
    assert result["detail"]["replayed"] is True  # read from the record: not fetched again
    assert site.server.requests.count(f"/slow/{bundle.name}") == 1
    assert [p.name for p in queued(inbox)] == [result["detail"]["bundle"]]

    bad = hq_cli(site, "update", "K001", str(bundle), "--url", url, "--transaction", "a b")
    assert bad.returncode == 2 and "--transaction" in bad.stderr, bad.stderr


def test_hq_update_waits_longer_than_the_device_may_download():
    (wait,) = [p for p in hq_update.params if p.name == "wait"]
    assert isinstance(wait.default, int)
    assert wait.default > KioskConfig().sync.update_download_timeout_s


# -- tampered bundles and offers the device must not take: refused, nothing queued ----------


def _other_bytes_hash(bundle: Path) -> str:
    return hashlib.sha256(bundle.read_bytes() + b"\0").hexdigest()


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("bad-hash", "refused", "bundle_hash"),
        ("wrong-size", "refused", "bundle_size"),
        ("signed-by-another-key", "refused", "bundle_signature"),
        ("another-version", "refused", "version_mismatch"),
        ("not-http", "refused", "bad_url"),
        ("running-version", "refused", "already_current"),
        ("too-large", "refused", "bundle_too_large"),
        ("not-found", "failed", "download_failed"),
        ("unreachable", "failed", "download_failed"),
    ],
)
def test_bad_bundles_and_offers_are_refused_and_nothing_is_queued(site, inbox, case, status, error):
    bundle = small_bundle(site, "9.9.3")
    command = {
        "bad-hash": lambda: offer(site, bundle, sha256=_other_bytes_hash(bundle)),
        "wrong-size": lambda: offer(site, bundle, size=bundle.stat().st_size - 1),
        "signed-by-another-key": lambda: offer(
            site, small_bundle(site, "9.9.3", signer=Ed25519PrivateKey.generate())
        ),
        "another-version": lambda: offer(site, bundle, version="9.9.4"),
        "not-http": lambda: offer(site, bundle, url=f"file://{bundle}"),
        "running-version": lambda: offer(site, bundle, version=__version__),
        "too-large": lambda: offer(site, bundle, size=KioskConfig().sync.update_max_bytes + 1),
        "not-found": lambda: offer(site, bundle, url=site.server.url("no-such-bundle.tar")),
        "unreachable": lambda: offer(site, bundle, url="http://127.0.0.1:9/kiosk.tar"),
    }[case]()
    requests = len(site.server.requests)
    result = site.send(command)
    assert (result.status, result.detail.get("error")) == (status, error), result.detail
    assert queued(inbox) == []
    assert left_behind(inbox) == []
    fetched = len(site.server.requests) - requests
    expect_fetch = case not in {"not-http", "running-version", "too-large", "unreachable"}
    assert fetched == (1 if expect_fetch else 0)


def test_expired_unsigned_or_foreign_update_commands_are_refused_before_any_download(site, inbox):
    bundle = small_bundle(site, "9.9.5")
    url = site.server.url(bundle.name)
    past = datetime.now(UTC) - timedelta(minutes=10)
    expired = update_command(site.command_key, "K001", bundle, url, timedelta(minutes=5), past)
    unsigned = update_command(site.command_key, "K001", bundle, url).model_copy(
        update={"signature": ""}
    )
    forged = update_command(Ed25519PrivateKey.generate(), "K001", bundle, url)
    altered = update_command(site.command_key, "K001", bundle, url).model_copy(
        update={"args": {"url": url, "sha256": "0" * 64, "size": 1, "version": "9.9.5"}}
    )
    requests = len(site.server.requests)
    assert site.send(expired).status == "expired"
    for command in (unsigned, forged, altered):
        assert site.send(command).status == "bad_signature"
    assert len(site.server.requests) == requests
    assert queued(inbox) == []


def test_hq_only_offers_http_urls_and_real_bundles(site, tmp_path):
    bundle = small_bundle(site, "9.9.6")
    with pytest.raises(ValueError, match="http"):
        update_command(site.command_key, "K001", bundle, f"file://{bundle}")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not an update bundle"):
        update_command(site.command_key, "K001", junk, site.server.url("junk.tar"))
    facts = bundle_facts(bundle)
    assert (facts.version, facts.size) == ("9.9.6", bundle.stat().st_size)
    assert facts.sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()


# -- the whole way: `kiosk hq update`, the installer, and the new version's agent ----------


def _telemetry_versions(site: Site, device_id: str) -> tuple[queue.Queue[str], MqttLink]:
    topic = Topics(site.hq.topic_prefix).telemetry(device_id)
    link = hq_link(site.hq, f"hq-watch-{secrets.token_hex(3)}", ((topic, 1),), clean_start=True)
    link.start()
    assert link.wait_connected(15)
    versions: queue.Queue[str] = queue.Queue()

    def watch() -> None:
        while link.connected:
            try:
                item = link.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Inbound):
                link.ack(item)
                versions.put(decode(Telemetry, item.payload).version)

    threading.Thread(target=watch, daemon=True).start()
    return versions, link


@pytest.mark.slow
def test_hq_update_reaches_the_installer_and_the_restarted_agent_reports_the_new_version(
    site, tmp_path, tmp_path_factory, no_index
):
    wheel = shared_release(tmp_path_factory, "1.0.1")
    bundle = site.server.root / "member-kiosk-1.0.1.tar"
    build_bundle([wheel], "1.0.1", site.update_key, bundle)
    data = site.kiosk("K002", "S002", 50_001)
    app = open_app(data)
    runner = Runner(Agent(app).run)
    try:
        # a device that has never been connected has no session at the broker to keep a
        # command in: the operator's command goes out once the agent is there
        wait_answering(site, "K002")
        hq = hq_cli(
            site, "update", "K002", str(bundle), "--url", site.server.url(bundle.name),
            "--wait", "60",
        )  # fmt: skip
    finally:
        runner.stop()
        app.close()
    assert hq.returncode == 0, hq.stdout + hq.stderr
    result = json.loads(hq.stdout)
    assert (result["status"], result["detail"]["version"]) == ("done", "1.0.1")
    assert [p.name for p in queued(data)] == [result["detail"]["bundle"]]

    # what member-kiosk-update.service runs once the inbox is not empty
    root = tmp_path / "opt"
    ((_, outcome),) = drain_inbox(
        data,
        install_root=root,
        public_key=site.update_key.public_key(),
        config_path=data / "config.toml",
        health_timeout=180,
    )
    assert not isinstance(outcome, str), outcome
    assert (outcome.status, outcome.version) == ("installed", "1.0.1"), outcome.problems
    assert queued(data) == []
    kiosk = root / "current" / "bin" / "kiosk"
    version = subprocess.run([str(kiosk), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "kiosk, version 1.0.1"

    # the agent systemd starts again runs the new version and says so in its telemetry
    versions, link = _telemetry_versions(site, "K002")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOTIFY_SOCKET")}
    with (data / "agent-1.0.1.log").open("wb") as log:
        agent = subprocess.Popen(
            [str(kiosk), "--data-dir", str(data), "agent", "--log-level", "WARNING"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while "1.0.1" not in seen:
            assert time.monotonic() < deadline, (seen, (data / "agent-1.0.1.log").read_text())
            try:
                seen.append(versions.get(timeout=1))
            except queue.Empty:
                assert agent.poll() is None, (data / "agent-1.0.1.log").read_text()
    finally:
        agent.terminate()
        agent.wait(20)
        link.close()


# -- a result finished while the broker is away is published when it is back ---------------


def test_an_update_finished_while_the_broker_is_down_is_answered_after_it_is_back(tmp_path):
    broker = start_broker(tmp_path / "broker")
    (tmp_path / "www").mkdir()
    server = BundleServer(tmp_path / "www")
    key, pub = update_key(tmp_path)
    site = Site(
        broker,
        server,
        hq_config(broker, tmp_path),
        load_command_key(broker.directory / "hq-command.key"),
        key,
        pub,
        tmp_path,
    )
    data = site.kiosk("K001", "S001", 1)
    app = open_app(data)
    runner = Runner(Agent(app).run)
    reply = Topics(site.hq.topic_prefix).command_result("K001")
    # HQ's side keeps its session (and so its subscription) over the broker's restart
    hq = hq_link(site.hq, "hq-results", ((reply, 1),))
    try:
        hq.start()
        assert hq.wait_connected(15)
        wait_answering(site, "K001")
        bundle = small_bundle(site, "9.9.7")
        command = update_command(
            site.command_key, "K001", bundle, server.url(f"slow/{bundle.name}")
        )
        server.delay_s = 3.0
        correlation = command.transaction.encode()
        hq.publish(
            Topics(site.hq.topic_prefix).command("K001"),
            command.to_bytes(),
            qos=1,
            response_topic=reply,
            correlation=correlation,
        )
        deadline = time.monotonic() + 10
        while f"/slow/{bundle.name}" not in server.requests:
            assert time.monotonic() < deadline, "the device never asked for the bundle"
            time.sleep(0.05)
        broker.stop()  # while the server still holds the bundle back
        deadline = time.monotonic() + 30
        while not queued(data):  # the device finishes the download with the broker away
            assert time.monotonic() < deadline, "the bundle was never queued"
            time.sleep(0.1)
        time.sleep(1.0)  # the loop has recorded the result and found no link to publish on
        broker.start()

        deadline = time.monotonic() + 30
        answer: CommandResult | None = None
        while answer is None:
            assert time.monotonic() < deadline, "the result never reached HQ"
            try:
                item = hq.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Inbound):
                hq.ack(item)
                if item.correlation == correlation:
                    answer = decode(CommandResult, item.payload)
        assert (answer.status, answer.detail["version"]) == ("done", "9.9.7"), answer.detail
        assert [p.name for p in queued(data)] == [answer.detail["bundle"]]
    finally:
        server.delay_s = 0.0
        hq.close()
        runner.stop()
        app.close()
        server.close()
        broker.stop()


# -- an agent killed mid-download runs the update again when it starts, or answers it -----------


@contextmanager
def own_site(tmp_path: Path) -> Iterator[Site]:
    """A site of its own: broker, download server and keys, for tests that kill processes."""
    broker = start_broker(tmp_path / "broker")
    (tmp_path / "www").mkdir()
    server = BundleServer(tmp_path / "www")
    key, pub = update_key(tmp_path)
    try:
        yield Site(
            broker,
            server,
            hq_config(broker, tmp_path),
            load_command_key(broker.directory / "hq-command.key"),
            key,
            pub,
            tmp_path,
        )
    finally:
        server.release.set()  # lets a download still held back end
        server.close()
        broker.stop()


class ResultWatch:
    """HQ's side of one device's commands: publishes them as ``send_command`` does and
    collects every result on the device's command/result topic, correlated or not."""

    def __init__(self, site: Site, device_id: str) -> None:
        self.topics = Topics(site.hq.topic_prefix)
        self.device_id = device_id
        self.reply = self.topics.command_result(device_id)
        self.link = hq_link(site.hq, f"hq-results-{secrets.token_hex(3)}", ((self.reply, 1),))
        self.link.start()
        assert self.link.wait_connected(15)
        self.results: list[tuple[CommandResult, bytes | None]] = []

    def send(self, command: Command) -> None:
        self.link.publish(
            self.topics.command(self.device_id),
            command.to_bytes(),
            qos=1,
            response_topic=self.reply,
            correlation=command.transaction.encode(),
        )

    def result(
        self, transaction: str, timeout_s: float, log: Path
    ) -> tuple[CommandResult, bytes | None]:
        """The first result for ``transaction`` and its correlation data."""
        deadline = time.monotonic() + timeout_s
        while True:
            for answer, correlation in self.results:
                if answer.transaction == transaction:
                    return answer, correlation
            assert time.monotonic() < deadline, f"no result for {transaction}: {log.read_text()}"
            try:
                item = self.link.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Inbound):
                self.link.ack(item)
                self.results.append((decode(CommandResult, item.payload), item.correlation))

    def close(self) -> None:
        self.link.close()


def started_agent(site: Site, data: Path) -> AgentProcess:
    """``kiosk agent`` on ``data`` as a process of its own, once it answers HQ."""
    agent = AgentProcess(data)
    agent.start()
    deadline = time.monotonic() + 30
    while True:
        assert agent.alive(), (data / "agent.log").read_text()
        try:
            if site.send(sign_command(site.command_key, "K001", "ping"), 5).status == "done":
                return agent
        except TimeoutError:
            assert time.monotonic() < deadline, (data / "agent.log").read_text()


def killed_mid_download(site: Site, hq: ResultWatch, agent: AgentProcess, command: Command) -> Path:
    """Sends ``command`` (an update from the server's ``halves/``) and SIGKILLs ``agent`` while
    the server holds back the second half of the bundle; returns the download it left."""
    site.server.half_sent.clear()
    site.server.release.clear()
    hq.send(command)
    assert site.server.half_sent.wait(20), "the device never asked for the bundle"
    data = agent.data_dir
    wait_until(lambda: bool(left_behind(data)), 10, "the download file")
    agent.kill()
    (partial,) = left_behind(data)  # the crash left the half-written download behind
    assert partial.name.endswith(".part"), partial
    return partial


def test_an_update_interrupted_by_a_crash_is_run_again_after_the_restart(tmp_path):
    with own_site(tmp_path) as site:
        data = site.kiosk("K001", "S001", 1)
        hq = ResultWatch(site, "K001")
        agent = started_agent(site, data)
        try:
            bundle = small_bundle(site, "9.7.1")
            path = f"/halves/{bundle.name}"
            command = update_command(
                site.command_key, "K001", bundle, site.server.url(path.lstrip("/"))
            )
            killed_mid_download(site, hq, agent, command)
            assert queued(data) == []

            site.server.half_sent.clear()
            agent.start()  # as systemd restarts it
            assert site.server.half_sent.wait(30), (data / "agent.log").read_text()
            assert site.server.requests.count(path) == 2  # fetched again, from the start
            hq.send(command)  # the same transaction while it runs again: not run a third time
            site.server.release.set()
            answer, correlation = hq.result(command.transaction, 60, data / "agent.log")
            assert answer.status == "done", answer.detail
            assert answer.detail["version"] == "9.7.1"
            assert correlation == command.transaction.encode()  # the one HQ sent with it
            (waiting,) = queued(data)
            assert waiting.name == answer.detail["bundle"]
            assert waiting.read_bytes() == bundle.read_bytes()
            assert left_behind(data) == []

            # HQ's operator reads the result by its transaction: from the record, not run again
            again = hq_cli(
                site, "update", "K001", str(bundle), "--url", site.server.url(path.lstrip("/")),
                "--transaction", command.transaction,
            )  # fmt: skip
            assert again.returncode == 0, again.stdout + again.stderr
            replayed = json.loads(again.stdout)
            assert (replayed["status"], replayed["detail"]["bundle"]) == ("done", waiting.name)
            assert replayed["detail"]["replayed"] is True
            assert site.server.requests.count(path) == 2
            assert queued(data) == [waiting]
        finally:
            agent.stop()
            hq.close()


def test_an_update_found_expired_after_a_crash_is_answered_expired_not_run(tmp_path):
    with own_site(tmp_path) as site:
        data = site.kiosk("K001", "S001", 1)
        hq = ResultWatch(site, "K001")
        agent = started_agent(site, data)
        try:
            bundle = small_bundle(site, "9.7.2")
            path = f"/halves/{bundle.name}"
            command = update_command(
                site.command_key,
                "K001",
                bundle,
                site.server.url(path.lstrip("/")),
                timedelta(seconds=8),
            )
            killed_mid_download(site, hq, agent, command)
            wait_until(lambda: datetime.now(UTC) > command.expires_at, 20, "the expiry")

            agent.start()
            answer, correlation = hq.result(command.transaction, 60, data / "agent.log")
            assert answer.status == "expired", answer.detail
            assert answer.detail["expired_at"] == command.expires_at.isoformat()
            assert correlation == command.transaction.encode()
            assert site.server.requests.count(path) == 1  # not fetched again
            assert queued(data) == []
            assert left_behind(data) == []  # the crash's partial download is gone
            # the answer is recorded: HQ sending the transaction again (signed anew, so not
            # expired itself) gets the same one, and nothing runs
            resent = update_command(
                site.command_key, "K001", bundle, site.server.url(path.lstrip("/")),
                transaction=command.transaction,
            )  # fmt: skip
            again = site.send(resent)
            assert (again.status, again.detail["replayed"]) == ("expired", True), again.detail
            assert site.server.requests.count(path) == 1
            assert queued(data) == []
        finally:
            agent.stop()
            hq.close()


def test_commands_taken_before_a_stop_are_run_again_or_answered_at_the_start(site, tmp_path):
    data = make_data_dir(tmp_path, site.broker, "K002", "S002", 50_001)
    app = open_app(data)
    runner = CommandRunner(app, load_public_key(data / "keys" / "hq-command.pub"))
    runner.background = runner.background | {"verify_ledger"}  # one that cannot run again
    bundle = small_bundle(site, "9.7.3")
    url = site.server.url(bundle.name)
    reply = Topics().command_result("K002")

    def taken(command: Command) -> Command:
        assert runner.screen(command, datetime.now(UTC)) is None
        assert runner.take(command, reply, command.transaction.encode())
        assert not runner.take(command, reply, None)  # taken once only
        return command

    again = taken(update_command(site.command_key, "K002", bundle, url))
    other = taken(sign_command(site.command_key, "K002", "verify_ledger"))
    worn = taken(update_command(site.command_key, "K002", bundle, url))
    short = taken(update_command(site.command_key, "K002", bundle, url, timedelta(seconds=30)))
    recorded = taken(update_command(site.command_key, "K002", bundle, url))
    runner.record(
        recorded, "done", {"queued": True, "version": "9.7.3", "bundle": "b"}, app.clock()
    )
    with transaction(app) as tx:
        row = tx.session.get(RunningCommand, worn.transaction)
        assert row is not None
        row.starts = MAX_STARTS
    downloads = data / "updates" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / ".member-kiosk-9.0.0.tar.part").write_bytes(b"half")

    later = datetime.now(UTC) + timedelta(seconds=60)  # ``short`` has expired by then
    resumed, answered = runner.interrupted(later)
    assert [t.command.transaction for t in resumed] == [again.transaction]
    assert resumed[0].correlation == again.transaction.encode()
    answers = {t.command.transaction: r for t, r in answered}
    assert answers[other.transaction].status == "failed"
    assert answers[other.transaction].detail["error"] == "interrupted"
    assert answers[worn.transaction].status == "failed"
    assert f"{MAX_STARTS} times" in answers[worn.transaction].detail["message"]
    assert answers[short.transaction].status == "expired"
    assert answers[recorded.transaction].status == "done"  # recorded, not yet published
    assert answers[recorded.transaction].detail["bundle"] == "b"
    assert left_behind(data) == []
    # all but the one running again are answered from their record from now on
    for command in (other, worn, short, recorded):
        replay = runner.screen(command, datetime.now(UTC))
        assert replay is not None and replay.detail["replayed"] is True
    with app.db.read() as session:
        starts = session.get(RunningCommand, again.transaction)
        assert starts is not None and starts.starts == 2
    for command in (again, other, worn, short, recorded):
        runner.answered(command.transaction)
    with app.db.read() as session:
        assert session.scalars(select(RunningCommand)).all() == []

    # an update interrupted once its bundle was queued is answered by the bundle in the inbox,
    # or by the version running once the installer put it in place: nothing is fetched again
    requests = len(site.server.requests)
    inbox = data / "updates" / "inbox"
    inbox.mkdir(parents=True)
    waiting = inbox / "20261206T000000000000Z-member-kiosk-9.7.3.tar"
    shutil.copyfile(bundle, waiting)
    assert runner.execute(again, resumed=True) == (
        "done",
        {"queued": True, "version": "9.7.3", "bundle": waiting.name},
    )
    running = offer(site, bundle, version=__version__)
    assert runner.execute(running, resumed=True) == (
        "done",
        {"queued": False, "version": __version__, "installed": True},
    )
    assert len(site.server.requests) == requests
    app.close()
