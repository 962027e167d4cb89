"""The HTTP SMS gateway adapter against a real HTTP server on 127.0.0.1: what it posts, and
how each kind of answer (or none) is read: delivered, retried later, or refused for good."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from edge.domain.errors import ConfigError
from edge.security.personal import PhoneVault
from hq.messages import (
    FAILED,
    QUEUED,
    SENT,
    RetryPolicy,
    SendFailed,
    attempt,
    enqueue,
    sender_from_spec,
)
from hq.models import HqMessage
from hq.sms import HttpSmsSender

TOKEN = "gw-secret-7f3a"
VAULT = PhoneVault(bytes(range(32)), bytes(range(32, 64)))
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


class Gateway:
    """A scripted SMS gateway: answers each POST with the next (status, body) of ``script``
    (the last one repeats); ``"hang"`` keeps the request waiting until the test ends."""

    def __init__(self) -> None:
        self.script: list[tuple[int, object] | str] = [(200, {"id": "sms-1"})]
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                gateway.requests.append((dict(self.headers.items()), body))
                step = gateway.script.pop(0) if len(gateway.script) > 1 else gateway.script[0]
                if step == "hang":
                    gateway.release.wait(30)
                    return
                assert isinstance(step, tuple)
                status, answer = step
                raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    g = Gateway()
    yield g
    g.close()


def test_a_message_is_posted_as_json_with_the_bearer_token(gateway: Gateway):
    sender = HttpSmsSender(gateway.url, TOKEN, timeout_s=5)
    text = "您有120积分将于12月31日到期。回复TD退订"
    assert sender.send("13812345678", text) == "sms-1"
    [(headers, body)] = gateway.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {
        "to": "13812345678",
        "text": "您有120积分将于12月31日到期。回复TD退订",
    }
    assert TOKEN not in repr(sender)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (401, False)]
)
def test_a_gateway_error_is_retryable_only_when_a_later_try_may_help(
    gateway: Gateway, status: int, retryable: bool
):
    gateway.script = [(status, {"error": "no"})]
    with pytest.raises(SendFailed, match=f"gateway answered {status}") as failed:
        HttpSmsSender(gateway.url, TOKEN, timeout_s=5).send("13812345678", "x")
    assert failed.value.retryable is retryable


def test_an_accepted_message_without_an_id_is_not_sent_twice(gateway: Gateway):
    gateway.script = [(200, b"ok")]
    with pytest.raises(SendFailed, match="gave no id") as failed:
        HttpSmsSender(gateway.url, TOKEN, timeout_s=5).send("13812345678", "x")
    assert failed.value.retryable is False


def test_a_refused_connection_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(SendFailed, match="gateway unreachable") as failed:
        HttpSmsSender(f"http://127.0.0.1:{port}/send", TOKEN, timeout_s=5).send("13812345678", "x")
    assert failed.value.retryable is True


def test_a_gateway_that_does_not_answer_times_out_retryably(gateway: Gateway):
    gateway.script = ["hang"]
    with pytest.raises(SendFailed, match=r"did not answer in 0\.5 s") as failed:
        HttpSmsSender(gateway.url, TOKEN, timeout_s=0.5).send("13812345678", "x")
    assert failed.value.retryable is True


def test_a_queued_message_fails_then_goes_through_the_gateway(engine: Engine, gateway: Gateway):
    gateway.script = [(503, {}), (200, {"id": "gw-42"})]
    sender = HttpSmsSender(gateway.url, TOKEN, timeout_s=5)
    policy = RetryPolicy(tries=3, first_wait_s=60)
    with Session(engine) as session, session.begin():
        message = enqueue(
            session, VAULT, kind="coupon", member_id="M1", phone="13812345678", text="hi",
            sender="http", now=NOW,
        )  # fmt: skip
        assert message is not None
        assert not attempt(session, VAULT, message, sender, NOW, policy)
        assert (message.status, message.last_error) == (QUEUED, "gateway answered 503")
        later = NOW + timedelta(seconds=60)
        assert message.due_at == later
        assert attempt(session, VAULT, message, sender, later, policy)
        message_id = message.id
    with Session(engine) as session:
        row = session.get(HqMessage, message_id)
        assert row is not None
        assert (row.status, row.provider_ref, row.attempts, row.sender) == (
            SENT,
            "gw-42",
            2,
            "http",
        )
    assert len(gateway.requests) == 2


def test_a_refused_number_fails_at_once(engine: Engine, gateway: Gateway):
    gateway.script = [(422, {"error": "invalid number"})]
    sender = HttpSmsSender(gateway.url, TOKEN, timeout_s=5)
    with Session(engine) as session, session.begin():
        message = enqueue(
            session, VAULT, kind="coupon", member_id="M1", phone="13812345678", text="hi",
            sender="http", now=NOW,
        )  # fmt: skip
        assert message is not None
        assert not attempt(session, VAULT, message, sender, NOW)
        assert (message.status, message.attempts, message.phone_enc) == (FAILED, 1, None)


def test_the_sender_setting_reads_the_token_from_a_file_or_a_systemd_credential(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="no token") as missing:
        sender_from_spec(f"http:{gateway.url}")
    assert missing.value.code == "token_missing"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sender = sender_from_spec(f"http:{gateway.url}", token_file=str(token_file))
    sender.send("13812345678", "x")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "sms-gateway-token").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    sender_from_spec(f"http:{gateway.url}").send("13812345678", "x")
    assert [h["Authorization"] for h, _ in gateway.requests] == [
        f"Bearer {TOKEN}",
        "Bearer from-systemd",
    ]
    with pytest.raises(ConfigError, match="not an http"):
        sender_from_spec("http:ftp://gateway/send", token_file=str(token_file))
    token_file.write_text("")
    with pytest.raises(ConfigError, match="one line"):
        sender_from_spec(f"http:{gateway.url}", token_file=str(token_file))
