"""Fixtures for sync tests: a real Mosquitto with the shipped TLS + ACL config, kiosks, HQ.

Nothing here fakes MQTT: the broker is ``/usr/sbin/mosquitto`` on a free loopback port,
started on the configuration and certificates ``edge.sync.broker`` renders.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import parse_config
from edge.sync.broker import Identity, render_broker
from tests.waiting import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

IDENTITIES = [
    Identity("hq", "hq"),
    Identity("K001", "kiosk", "S001"),
    Identity("K002", "kiosk", "S002"),
    Identity("K003", "kiosk", "S001"),  # a second kiosk at S001
    Identity("K004", "kiosk", "S002"),  # a second kiosk at S002
    Identity("K009", "kiosk", "S009"),
    Identity("L1", "lane", "S001"),
    Identity("L2", "lane", "S002"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    wait_for(check, timeout, what, every=every)


@dataclass
class Broker:
    """A Mosquitto process on the shipped configuration; can be killed and restarted."""

    directory: Path
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "mosquitto.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def tls(self, cn: str) -> tuple[Path, Path, Path]:
        return self.directory / "ca.crt", self.directory / f"{cn}.crt", self.directory / f"{cn}.key"


def start_broker(directory: Path, max_queued: int = 1000) -> Broker:
    port = free_port()
    conf = render_broker(directory, port, IDENTITIES, max_queued=max_queued)
    broker = Broker(directory.resolve(), port, conf)
    broker.start()
    return broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


# A chain: HQ's broker knows every device and store S001's bridge; S001's broker knows its
# own kiosk and lane and bridges to HQ's with the shipped bridge configuration.
BRIDGE_S001 = Identity("bridge-S001", "bridge", "S001")
HQ_IDENTITIES = [*IDENTITIES, BRIDGE_S001]
STORE_S001_IDENTITIES = [i for i in IDENTITIES if i.store_id == "S001"] + [BRIDGE_S001]


@dataclass
class Chain:
    """HQ's broker and store S001's broker, bridged; both can be killed and restarted."""

    hq: Broker
    store: Broker

    def stop(self) -> None:
        self.store.stop()
        self.hq.stop()


def start_chain(root: Path) -> Chain:
    """Both brokers from ``render_broker``; the store's certificates come from the same
    (chain) CA as HQ's, so the bridge's certificate is good at HQ and HQ's at the bridge."""
    hq_port = store_port = free_port()
    while store_port == hq_port:
        store_port = free_port()
    hq_dir, store_dir = (root / "hq-broker").resolve(), (root / "store-broker").resolve()
    hq_conf = render_broker(hq_dir, hq_port, HQ_IDENTITIES)
    store_dir.mkdir(parents=True)
    for name in ("ca.crt", "ca.key"):
        shutil.copy(hq_dir / name, store_dir / name)
    store_conf = render_broker(
        store_dir, store_port, STORE_S001_IDENTITIES, hq_address=f"127.0.0.1:{hq_port}"
    )
    chain = Chain(Broker(hq_dir, hq_port, hq_conf), Broker(store_dir, store_port, store_conf))
    chain.hq.start()
    chain.store.start()
    return chain


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = start_chain(tmp_path)
    yield c
    c.stop()


def kiosk_config(
    device_id: str,
    store_id: str,
    port: int,
    card_start: int,
    extra: str = "",
    host: str = "127.0.0.1",
) -> str:
    return f"""
[device]
device_id = "{device_id}"
store_id = "{store_id}"
card_range_start = {card_start}
card_range_end = {card_start + 49_999}

[sync]
enabled = true
broker_host = "{host}"
broker_port = {port}
ack_timeout_s = 3.0
retry_max_s = 6.0
reconnect_min_s = 0.2
reconnect_max_s = 2.0
telemetry_interval_s = 2.0
{extra}
"""


def make_data_dir(
    root: Path,
    broker: Broker,
    device_id: str,
    store_id: str,
    card_start: int,
    *,
    port: int | None = None,
    extra: str = "",
    hq_broker: Broker | None = None,
) -> Path:
    """A kiosk's data directory: config for ``device_id`` in ``store_id``, its TLS files, and
    HQ's command public key (from ``hq_broker``'s directory when HQ has a broker of its own)."""
    data = root / device_id
    (data / "tls").mkdir(parents=True, exist_ok=True)
    (data / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, cert, key = broker.tls(device_id)
    shutil.copy(ca, data / "tls" / "ca.crt")
    shutil.copy(cert, data / "tls" / "device.crt")
    shutil.copy(key, data / "tls" / "device.key")
    keys_from = (hq_broker or broker).directory
    shutil.copy(keys_from / "hq-command.pub", data / "keys" / "hq-command.pub")
    text = kiosk_config(device_id, store_id, port or broker.port, card_start, extra)
    (data / "config.toml").write_text(text)
    return data


def open_app(data: Path) -> AppContext:
    text = (data / "config.toml").read_text()
    return AppContext.open(data, config=parse_config(text))


class Runner:
    """Runs an agent or HQ loop on a thread (for tests that don't kill processes)."""

    def __init__(self, target: Callable[[Callable[[], bool]], None]) -> None:
        self._stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                target(self._stop.is_set)
            except BaseException as exc:
                self.error = exc
                raise

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "loop did not stop"
        assert self.error is None, self.error
