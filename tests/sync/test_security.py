"""Security against the real broker: ACL, client certificates, signed commands."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.protocol import EventAck, Topics
from edge.protocol.link import TlsFiles
from edge.security.keys import load_public_key
from edge.sync.agent import Agent
from edge.sync.broker import DevCA
from edge.sync.commands import CommandRunner
from hq.commands import load_command_key, send_command, sign_command
from tests.sync.conftest import Runner, make_data_dir, open_app
from tests.sync.helpers import arriving, client, hq_config, received

T = Topics()


def test_a_device_cannot_publish_on_another_devices_topics(broker):
    observer = client(broker, "hq", subs=[("mck/v1/#", 1)])
    intruder = client(broker, "K002", client_id="K002")
    observer.start()
    intruder.start()
    try:
        assert observer.wait_connected(10) and intruder.wait_connected(10)
        time.sleep(0.3)
        received(observer, 0.3)  # retained statuses
        ack = EventAck(event_ids=[], at=datetime.now(UTC)).to_bytes()
        forged = [
            (T.ack("K001"), ack),  # a fake ack would make K001 drop undelivered events
            (T.events("K001"), b'{"v":1}'),
            (T.status("K001"), b'{"v":1}'),
            (T.command("K001"), b"{}"),
            (T.catalogue(), b"{}"),
            (T.lane_purchase("S001", "L1"), b"{}"),
        ]
        for topic, payload in forged:
            intruder.publish(topic, payload, qos=1)
        intruder.publish(T.telemetry("K002"), b"own topic", qos=1)  # allowed: the control
        got = received(observer, 1.5)
        topics = [m.topic for m in got]
        assert T.telemetry("K002") in topics
        assert not [t for t, _ in forged if t in topics], topics
    finally:
        intruder.close()
        observer.close()


def test_a_link_is_connected_once_the_broker_has_taken_its_subscriptions(broker):
    # A message published the moment the link says it is connected must reach it, even on
    # the last of many subscriptions: before, "connected" came as soon as the SUBSCRIBEs were
    # queued, and a message that overtook them reached nobody.
    publisher = client(broker, "K002", client_id="K002")
    publisher.start()
    subs = [(T.telemetry(f"K9{n:03d}"), 1) for n in range(600)] + [(T.telemetry("K002"), 1)]
    listener = client(broker, "hq", subs=subs)
    try:
        assert publisher.wait_connected(10)
        listener.start()
        assert listener.wait_connected(10)
        assert publisher.publish(T.telemetry("K002"), b"first", qos=1)
        got = next((m for m in arriving(listener, 10) if m.payload == b"first"), None)
        assert got is not None and got.topic == T.telemetry("K002")
    finally:
        listener.close()
        publisher.close()


def test_connections_without_a_valid_client_certificate_are_refused(broker, tmp_path):
    ca = broker.directory / "ca.crt"
    rogue = DevCA(tmp_path / "rogue")  # same CN, wrong CA
    cert, key = rogue.issue("K001")
    good = client(broker, "K001", client_id="K001")
    wrong_ca = client(broker, "K001", tls=TlsFiles(ca, cert, key), client_id="K001-rogue")
    good.start()
    wrong_ca.start()
    try:
        assert good.wait_connected(10)
        assert not wrong_ca.wait_connected(3)
    finally:
        wrong_ca.close()
        good.close()
    # No certificate at all: the TLS handshake fails (require_certificate true).
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", broker.port)) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"\x10\x00")
                refused = tls.recv(16) == b""
        except (ssl.SSLError, ConnectionResetError):
            refused = True
    assert refused
    # And plain TCP without TLS gets nothing either.
    with socket.create_connection(("127.0.0.1", broker.port)) as raw:
        raw.settimeout(3)
        raw.sendall(b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x05K001x")
        try:
            answer = raw.recv(16)
        except (TimeoutError, ConnectionResetError):
            answer = b""
        assert not answer.startswith(b"\x20")  # no CONNACK


def test_commands_with_bad_signatures_or_keys_are_refused(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    hq_key = load_command_key(broker.directory / "hq-command.key")
    runner = CommandRunner(app, load_public_key(app.data_dir / "keys" / "hq-command.pub"))
    now = datetime.now(UTC)
    good = sign_command(hq_key, "K001", "ping", now=now)
    assert runner.handle(good, now).status == "done"
    other = sign_command(Ed25519PrivateKey.generate(), "K001", "ping", now=now)
    assert runner.handle(other, now).status == "bad_signature"
    tampered = good.model_copy(update={"command": "expire_points"})
    assert runner.handle(tampered, now).status == "bad_signature"
    redirected = sign_command(hq_key, "K002", "ping", now=now)
    assert runner.handle(redirected, now).status == "refused"
    expired = sign_command(hq_key, "K001", "ping", ttl=timedelta(seconds=5), now=now)
    assert runner.handle(expired, now + timedelta(seconds=6)).status == "expired"
    unknown = sign_command(hq_key, "K001", "format_disk", now=now)
    assert runner.handle(unknown, now).status == "refused"
    garbage = good.model_copy(update={"signature": base64.b64encode(b"x" * 64).decode()})
    assert runner.handle(garbage, now).status == "bad_signature"
    # The same transaction again is answered from the record, not run twice.
    again = runner.handle(good, now)
    assert again.status == "done" and again.detail.get("replayed") is True
    app.close()


def test_signed_command_round_trip_through_the_broker(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    agent = Runner(Agent(app).run)
    config = hq_config(broker, tmp_path)
    try:
        key = load_command_key(broker.directory / "hq-command.key")
        time.sleep(1.0)
        result = send_command(config, sign_command(key, "K001", "verify_ledger"), timeout_s=20)
        assert result.status == "done" and result.detail["ok"] is True
        wrong = sign_command(Ed25519PrivateKey.generate(), "K001", "verify_ledger")
        assert send_command(config, wrong, timeout_s=20).status == "bad_signature"
    finally:
        agent.stop()
        app.close()
