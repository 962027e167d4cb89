"""The console's tests: a real HQ database (SQLite, or the tests' own PostgreSQL), the real
ASGI app through Starlette's test client, and for the browser tests the app served by
uvicorn on a free loopback port and driven by Playwright in Debian's Chromium."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx2
import pytest
import uvicorn
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from edge.protocol import DeviceHealth, StorageWear, Telemetry
from hq import accounts, fleet
from hq.accounts import Role
from hq.audit import Actor
from hq.ledger import raise_alert
from hq.service import HqConfig
from hq.web.app import make_app
from hq.web.core import LOGIN_COOKIE, Console
from tests.conftest import SteppingClock
from tests.hq.database import hq_data_key_file, sqlite_hq_url
from tests.sync.conftest import broker

__all__ = ["broker"]

PASSWORD = "tidy-lantern-42"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Web:
    console: Console
    config: HqConfig
    clock: SteppingClock
    tmp: Path

    def session(self) -> Session:
        return Session(self.console.engine)

    def account(self, name: str, role: Role, password: str = PASSWORD) -> None:
        with self.console.tx() as s:
            accounts.create_account(
                s, name, name.title(), role, password, Actor("setup"), self.clock()
            )

    def client(self, name: str | None = None, password: str = PASSWORD) -> TestClient:
        """A test client, signed in as ``name`` when given."""
        client = TestClient(make_app(self.console), follow_redirects=False)
        if name is not None:
            response = sign_in(client, name, password)
            assert response.status_code == 303, response.text
        return client


def login_csrf(client: TestClient) -> str:
    client.get("/login")
    return str(client.cookies.get(LOGIN_COOKIE))


def sign_in(client: TestClient, name: str, password: str) -> httpx2.Response:
    token = login_csrf(client)
    return client.post(
        "/login", data={"csrf": token, "name": name, "password": password, "next": "/fleet"}
    )


def refused(response: httpx2.Response) -> bool:
    """Whether a change came back to its page with an error message."""
    return "error" in (response.cookies.get("mck_flash") or "")


def csrf_of(client: TestClient, page: str = "/fleet") -> str:
    """The session's CSRF token, as a page's forms carry it."""
    html = client.get(page).text
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    clock = SteppingClock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    config = HqConfig(
        database_url=sqlite_hq_url(tmp_path / "hq.db"),
        data_key_file=hq_data_key_file(),
        backup_dir=str(tmp_path / "backups"),
    )
    console = Console(config, clock=clock, stream_every_s=0.2)
    yield Web(console, config, clock, tmp_path)
    console.engine.dispose()


def telemetry(
    device_id: str,
    store_id: str,
    at: datetime,
    *,
    outbox: int = 0,
    printer: Literal["ok", "degraded", "failed", "unknown"] = "ok",
    printer_code: str = "",
    reason: str = "",
    temperature: float = 48.0,
) -> Telemetry:
    return Telemetry(
        device_id=device_id,
        store_id=store_id,
        at=at,
        version="1.4.2",
        uptime_s=3600.0,
        outbox_depth=outbox,
        devices={
            "printer": DeviceHealth(state=printer, code=printer_code, reason=reason),
            "scanner": DeviceHealth(state="ok"),
            "dispenser": DeviceHealth(state="ok"),
        },
        storage=StorageWear(device="mmcblk0", free_bytes=6 * 10**9, total_bytes=16 * 10**9),
        temperature_c=temperature,
        camera_fps=14.5,
    )


def seed_fleet(web: Web, stores: int = 3, per_store: int = 2, hours: int = 6) -> list[str]:
    """Devices that reported telemetry every few minutes for ``hours``; one printer out of
    paper (and its alert)."""
    ids = []
    with web.console.tx() as s:
        start = web.clock() - timedelta(hours=hours)
        for store in range(1, stores + 1):
            for n in range(1, per_store + 1):
                device = f"K{store:03d}{n}"
                ids.append(device)
                for step in range(0, hours * 60, 10):
                    at = start + timedelta(minutes=step)
                    out = device == "K0011" and step >= hours * 60 - 10
                    fleet.apply_telemetry(
                        s,
                        telemetry(
                            device,
                            f"S{store:03d}",
                            at,
                            outbox=(step * 7 + n * 13) % 40,
                            printer="failed" if out else "ok",
                            printer_code="paper_out" if out else "",
                            reason="paper out" if out else "",
                            temperature=45 + (step % 60) / 10,
                        ),
                        at,
                    )
        raise_alert(
            s, "overdraft", "M-42", "balance -120 after offline redemptions", web.clock(), "S002"
        )
    return ids


@dataclass
class Served:
    url: str
    web: Web


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(web: Web) -> Iterator[Served]:
    """The console served by uvicorn on a free loopback port, with the real clock."""
    web.console.clock = lambda: datetime.now(UTC)
    web.clock.now = datetime.now(UTC)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(web.console),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while not server.started:
        assert datetime.now(UTC) < deadline, "the console did not start"
        thread.join(0.05)
    yield Served(f"http://127.0.0.1:{port}", web)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
