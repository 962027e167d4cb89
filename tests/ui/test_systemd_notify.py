"""The app tells systemd it is up once the attract screen is drawn, then pings its watchdog
from the UI thread; a UI thread that stops turning stops the pings."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's side: a datagram socket named by ``$NOTIFY_SOCKET``, a 0.4 s watchdog."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_ready_after_the_attract_screen_is_drawn_then_watchdog_pings(make_kiosk, notify_socket):
    kiosk = make_kiosk()
    assert kiosk.app.current == "attract"
    messages = kiosk.wait_for(lambda: _received(notify_socket), what="the first message")
    assert messages and messages[0].startswith("READY=1")
    # the watchdog interval is half of WATCHDOG_USEC: 0.2 s, so 3 pings take 0.4 s or more,
    # and in the time they took there is no room for more than one ping every 0.2 s
    start = time.monotonic()
    pings: list[str] = []

    def three_pings() -> bool:
        pings.extend(_received(notify_socket))
        return pings.count("WATCHDOG=1") >= 3

    kiosk.wait_for(three_pings, what="three watchdog pings")
    took = time.monotonic() - start
    assert 3 <= pings.count("WATCHDOG=1") <= took / 0.2 + 2
    assert not any(m.startswith("READY=1") for m in pings)  # ready is said once


def test_a_frozen_ui_thread_sends_no_pings(make_kiosk, notify_socket):
    kiosk = make_kiosk()
    _received(notify_socket)
    time.sleep(1.0)  # the UI thread is busy elsewhere: the clock does not run
    assert _received(notify_socket) == []
    # and when it turns again, so do the pings
    pings = kiosk.wait_for(lambda: _received(notify_socket), what="a ping")
    assert "WATCHDOG=1" in pings


def test_no_pings_without_a_watchdog(make_kiosk, notify_socket, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC")
    kiosk = make_kiosk()
    kiosk.pump(0.6)
    messages = _received(notify_socket)
    assert [m.split("\n")[0] for m in messages] == ["READY=1"]


def test_stopping_is_said_on_the_way_out(make_kiosk, notify_socket):
    kiosk = make_kiosk()
    _received(notify_socket)
    kiosk.app.dispatch("on_stop")
    assert "STOPPING=1" in _received(notify_socket)
