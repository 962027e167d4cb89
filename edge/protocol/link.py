"""The MQTT 5 session every participant uses: a small interface over paho-mqtt.

What it guarantees, so callers need not care about paho:

* a persistent session (clean start off, a session expiry), TLS with a client certificate;
* a retained status: ``online`` published on every connect, the last will says ``offline``,
  and a clean :meth:`MqttLink.close` publishes ``offline`` itself (the will does not fire then);
* reconnecting forever with exponential backoff from a jittered start;
* inbound QoS 1 messages are acknowledged only when the caller says it has applied them
  (:meth:`MqttLink.ack`), so a crash in between means redelivery, not loss;
* MQTT 5 request/response: response topic, correlation data and message expiry.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """The CA that signed the broker, and this client's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class LinkSettings:
    client_id: str
    host: str
    port: int
    tls: TlsFiles | None
    status_topic: str
    online_payload: Callable[[], bytes]
    offline_payload: Callable[[], bytes]
    subscriptions: tuple[tuple[str, int], ...] = ()
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    clean_start: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass
class Inbound:
    """A received message; call :meth:`MqttLink.ack` with it once it has been applied."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None
    expiry_s: int | None = None
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class _Pending:
    """A request waiting for its answer."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: Inbound | None = None


class MqttLink:
    """One MQTT 5 client with the conventions above; inbound messages land on :attr:`inbox`."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.inbox: queue.Queue[Inbound | str] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker has taken this connection's subscriptions
        self._failing_since: float | None = None  # monotonic: attempts failing since then
        self._last_subscription: int | None = None
        self._stop = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
            manual_ack=True,
        )
        self._client.max_queued_messages_set(10_000)
        if settings.tls is not None:
            self._client.tls_set(
                ca_certs=str(settings.tls.ca_file),
                certfile=str(settings.tls.cert_file),
                keyfile=str(settings.tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._client.will_set(settings.status_topic, settings.offline_payload(), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_connect_fail = self._on_connect_fail
        self.connects = 0
        self._waiting: dict[bytes, _Pending] = {}
        self._waiting_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connects in the background and keeps reconnecting until :meth:`close`.

        paho's own network thread (``loop_start``) is used on purpose: with it, ``publish``
        from another thread only queues the packet and wakes the loop, whereas a loop run
        on a thread of our own makes ``publish`` write to the TLS socket from the caller's
        thread, concurrently with the loop, which corrupts OpenSSL's state.
        """
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        self._jitter_reconnect()
        self._client.connect_async(
            s.host, s.port, s.keepalive_s, clean_start=s.clean_start, properties=props
        )
        self._client.loop_start()

    def _jitter_reconnect(self) -> None:
        """Exponential backoff (paho doubles the delay per failed attempt) from a random
        start, so a fleet that lost its broker together does not come back in lockstep."""
        s = self.settings
        first = random.uniform(s.reconnect_min_s, 2 * s.reconnect_min_s)
        # paho's annotation says int; it computes with whatever number it is given.
        self._client.reconnect_delay_set(
            min_delay=cast(int, min(first, s.reconnect_max_s)),
            max_delay=cast(int, s.reconnect_max_s),
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float, *, give_up_s: float | None = None) -> bool:
        """Waits until the link is connected and the broker has taken its subscriptions, so a
        message published to it from now on reaches it.

        With ``give_up_s``, gives up once connection attempts have been failing that long
        (nothing listening, TLS or the broker refusing), before ``timeout``: a command someone
        waits for says so within seconds, while a broker that is restarting still gets the
        few retries that reach it. The link itself goes on trying.
        """
        deadline = time.monotonic() + timeout
        while give_up_s is not None and not self._connected.is_set():
            now = time.monotonic()
            failing = self._failing_since
            end = deadline if failing is None else min(deadline, failing + give_up_s)
            if now >= end:
                return False
            self._connected.wait(min(end - now, 0.1))
        return self._connected.wait(max(0.0, deadline - time.monotonic())) and (
            self._subscribed.wait(max(0.0, deadline - time.monotonic()))
        )

    def close(self, timeout: float = 3.0) -> None:
        """Publishes ``offline`` (a clean disconnect does not fire the will), then disconnects."""
        if self._connected.is_set():
            info = self._client.publish(
                self.settings.status_topic, self.settings.offline_payload(), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------------ traffic

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
    ) -> bool:
        """Queues a message; False when not connected (the caller retries later)."""
        if not self._connected.is_set():
            return False
        props: Properties | None = None
        if response_topic or correlation is not None or expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
            if expiry_s is not None:
                props.MessageExpiryInterval = max(1, int(expiry_s))
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def request(
        self, topic: str, payload: bytes, response_topic: str, timeout_s: float
    ) -> Inbound | None:
        """An MQTT 5 request: publishes with ``response_topic`` and fresh correlation data,
        and waits for the answer that carries them back (None: not connected, or no answer
        within ``timeout_s``). The answer is taken here, not queued on :attr:`inbox`, so any
        thread but paho's own may wait, the one that reads the inbox included."""
        correlation = os.urandom(16)
        pending = _Pending()
        with self._waiting_lock:
            self._waiting[correlation] = pending
        try:
            if not self.publish(
                topic, payload, qos=1, response_topic=response_topic, correlation=correlation
            ):
                return None
            pending.done.wait(timeout_s)
            return pending.answer
        finally:
            with self._waiting_lock:
                self._waiting.pop(correlation, None)

    def ack(self, message: Inbound) -> None:
        """Tells the broker ``message`` is applied (QoS 1); before that it will be redelivered."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._client.subscribe(topic, qos=qos)

    def unsubscribe(self, topic: str) -> None:
        self._client.unsubscribe(topic)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            self._failed_attempt()
            return
        self.connects += 1
        self._last_subscription = None
        for topic, qos in self.settings.subscriptions:
            self._last_subscription = client.subscribe(topic, qos=qos)[1]
        if self._last_subscription is None:
            self._subscribed.set()
        client.publish(self.settings.status_topic, self.settings.online_payload(), 1, True)
        self._failing_since = None
        self._connected.set()
        self.inbox.put("connected")
        log.info("connected (session present: %s)", flags.session_present)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """paho could not connect (nothing listening, or TLS failed); it retries itself."""
        self._failed_attempt()

    def _failed_attempt(self) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.info("disconnected: %s", reason_code)
        self._connected.clear()
        self._subscribed.clear()
        self.inbox.put("disconnected")
        if not self._stop.is_set():
            self._jitter_reconnect()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # The broker answers a connection's SUBSCRIBEs in order: the last one's answer means
        # all of them are in force (a refused topic is the ACL's to log, not a reason to wait).
        if mid == self._last_subscription:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        inbound = Inbound(
            msg.topic,
            bytes(msg.payload),
            msg.qos,
            msg.mid,
            bool(msg.retain),
            response_topic,
            correlation,
            expiry,
        )
        if correlation is not None:
            with self._waiting_lock:
                pending = self._waiting.get(bytes(correlation))
            if pending is not None:
                pending.answer = inbound
                pending.done.set()
                self.ack(inbound)
                return
        self.inbox.put(inbound)
