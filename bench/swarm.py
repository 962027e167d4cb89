"""Thousands of MQTT clients on one thread: paho's external event loop, for the chain
simulation's devices.

Each client is a real paho MQTT 5 client with its own certificate, driven by one selector
(paho's ``on_socket_*`` callbacks register its socket) instead of a thread per client. Work
that must run later goes on the swarm's timer heap; everything runs on the swarm's thread,
so the simulated devices need no locks. A client whose connection drops (a broker restart)
connects again after a random delay, as a device does.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import selectors
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def raise_fd_limit() -> int:
    """As many open files as the system lets this process have (one per connection)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, 65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


class Swarm:
    """Many clients, one selector, one timer heap."""

    def __init__(self, host: str, port: int, tls_dir: Path) -> None:
        self.host, self.port, self.tls_dir = host, port, tls_dir
        self.sel = selectors.DefaultSelector()
        self.clients: list[mqtt.Client] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._down: dict[mqtt.Client, float] = {}
        self._next_misc = 0.0
        self.reconnects = 0

    # ------------------------------------------------------------------ clients

    def add(
        self,
        cn: str,
        on_connect: Callable[[mqtt.Client], None],
        on_message: Callable[[mqtt.Client, mqtt.MQTTMessage], None],
    ) -> mqtt.Client:
        """A client with ``cn``'s certificate (client id ``cn``), connected now."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cn, protocol=mqtt.MQTTv5, userdata=cn
        )
        client.tls_set(
            ca_certs=str(self.tls_dir / "ca.crt"),
            certfile=str(self.tls_dir / f"{cn}.crt"),
            keyfile=str(self.tls_dir / f"{cn}.key"),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.max_inflight_messages_set(100)
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing

        def connected(c: mqtt.Client, *_: Any) -> None:
            on_connect(c)

        def disconnected(c: mqtt.Client, *_: Any) -> None:
            self._down[c] = time.monotonic() + random.uniform(0.5, 2.0)

        client.on_connect = connected
        client.on_disconnect = disconnected
        client.on_message = lambda c, _u, msg: on_message(c, msg)
        self.clients.append(client)
        self._connect(client)
        return client

    def _connect(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        try:
            client.connect(self.host, self.port, 60, clean_start=False, properties=props)
        except OSError:
            self._down[client] = time.monotonic() + random.uniform(0.5, 2.0)

    def _opened(self, client: mqtt.Client, _u: object, sock: Any) -> None:
        self.sel.register(sock, READ, client)

    def _closed(self, client: mqtt.Client, _u: object, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)

    def _want_write(self, client: mqtt.Client, _u: object, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, READ | WRITE, client)

    def _done_writing(self, client: mqtt.Client, _u: object, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, READ, client)

    # ------------------------------------------------------------------ time

    def later(self, delay_s: float, work: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._order), work))

    def run(self, until: Callable[[], bool], slice_s: float = 0.02) -> None:
        """Serves every client until ``until()`` (checked between slices)."""
        while not until():
            self.step(slice_s)

    def step(self, slice_s: float) -> None:
        now = time.monotonic()
        timeout = slice_s
        if self._timers:
            timeout = max(0.0, min(timeout, self._timers[0][0] - now))
        for key, mask in self.sel.select(timeout):
            client: mqtt.Client = key.data
            if mask & READ:
                client.loop_read()
                sock = client.socket()
                pending = getattr(sock, "pending", None)
                while sock is not None and pending is not None and pending() > 0:
                    client.loop_read()
                    sock = client.socket()
                    pending = getattr(sock, "pending", None)
            if mask & WRITE:
                client.loop_write()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, work = heapq.heappop(self._timers)
            work()
        if now >= self._next_misc:
            self._next_misc = now + 1.0
            for client in self.clients:
                client.loop_misc()
            for client, at in list(self._down.items()):
                if at <= now:
                    del self._down[client]
                    self.reconnects += 1
                    try:
                        client.reconnect()
                    except OSError:
                        self._down[client] = now + random.uniform(0.5, 2.0)

    def connected(self) -> int:
        return sum(1 for c in self.clients if c.is_connected())
