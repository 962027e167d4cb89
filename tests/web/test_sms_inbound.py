"""Members' replies posted by the SMS gateway (``POST /sms/inbound``): a bad token or body is
refused and changes nothing, "TD" withdraws consent so the next reminder is not sent, any
other reply is recorded and ignored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from edge.security.personal import PhoneVault
from hq.audit import Actor, entries
from hq.contact import set_message_consent
from hq.messages import CANCELLED, QUEUED, FileSender, enqueue
from hq.models import CentralMember, HqMessage
from hq.reminders import MessageSettings, deliver_due
from hq.web.sms import is_unsubscribe
from tests.web.conftest import Web

TOKEN = "inbound-6d1c"
VAULT = PhoneVault(bytes(range(32)), bytes(range(32, 64)))
PHONE = "13812345678"


@pytest.fixture
def gateway_web(web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Web:
    """The console with the inbound token as a systemd credential, the chain's lookup key,
    and member M1 with consent and one birthday reminder queued."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "sms-inbound-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    web.console.phone_lookup = VAULT.lookup_hash
    now = web.clock()
    with web.console.tx() as s:
        member = CentralMember(
            id="M1",
            store_id="S001",
            tier="basic",
            phone_masked="138****5678",
            phone_hash=VAULT.lookup_hash(PHONE),
            phone_enc=VAULT.encrypt(PHONE),
            birth_month=12,
            created_at=now,
            updated_at=now,
        )
        s.add(member)
        set_message_consent(s, member, "2026-12", now=now, actor=Actor("kiosk", "event"))
        enqueue(
            s, VAULT, kind="birthday", member_id="M1", phone=PHONE, text="生日月快乐",
            sender="file", now=now, due_at=now + timedelta(hours=1),
            dedupe_key="birthday:M1:2026",
        )  # fmt: skip
    return web


def _post(web: Web, body: object, token: str | None = TOKEN, raw: bytes | None = None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    client = web.client()
    if raw is not None:
        return client.post("/sms/inbound", content=raw, headers=headers)
    return client.post("/sms/inbound", json=body, headers=headers)


def _consent(web: Web) -> str | None:
    with web.session() as s:
        member = s.get(CentralMember, "M1")
        assert member is not None
        return member.message_consent_version


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_reply_without_the_gateway_token_is_refused(gateway_web: Web, token: str | None):
    response = _post(gateway_web, {"from": PHONE, "text": "TD"}, token=token)
    assert response.status_code == 401
    assert response.json() == {"error": "a valid bearer token is needed"}
    assert _consent(gateway_web) == "2026-12"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", "the body is not JSON"),
        (b'["TD"]', "the body is not a JSON object"),
        (b'{"from": "13812345678"}', '"from" and "text" must both be strings'),
        (b'{"from": "12345", "text": "TD"}', "This is not a mobile phone number"),
        (b'{"from": "13812345678", "text": "' + b"x" * 5000 + b'"}', "the body is larger"),
    ],
)
def test_a_bad_payload_gets_a_one_line_400(gateway_web: Web, raw: bytes, error: str):
    response = _post(gateway_web, None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert "\n" not in response.json()["error"]
    assert _consent(gateway_web) == "2026-12"


def test_td_withdraws_consent_and_the_next_reminder_is_not_sent(gateway_web: Web):
    web = gateway_web
    response = _post(web, {"from": "+86 138 1234 5678", "text": "ｔｄ"})
    assert response.status_code == 200 and response.json() == {"result": "unsubscribed"}
    assert _consent(web) is None
    assert _post(web, {"from": PHONE, "text": "退订"}).json() == {"result": "already"}
    with web.session() as s:
        [message] = s.scalars(select(HqMessage))
        assert (message.status, message.phone_enc) == (CANCELLED, None)
        rows, _ = entries(s, text="M1")
        withdrawn = next(r for r in rows if r.action == "member.message_consent")
        assert (withdrawn.source, withdrawn.actor) == ("sms", "138****5678")
        assert withdrawn.after == {"message_consent": None}
    sender = FileSender(web.tmp / "sent.jsonl")
    later = web.clock() + timedelta(hours=2)
    report = deliver_due(web.console.engine, VAULT, sender, MessageSettings(), lambda: later)
    assert report.sent == 0 and sender.sent() == []


def test_any_other_reply_is_recorded_and_changes_nothing(gateway_web: Web):
    web = gateway_web
    response = _post(web, {"from": PHONE, "text": "谢谢<b>"})
    assert response.json() == {"result": "ignored"}
    assert _post(web, {"from": "13900001111", "text": "TD"}).json() == {"result": "unknown_number"}
    assert _consent(web) == "2026-12"
    with web.session() as s:
        [message] = s.scalars(select(HqMessage))
        assert message.status == QUEUED
        rows, _ = entries(s, text="sms.reply")
        assert {(r.subject, r.after["text"]) for r in rows} == {
            ("M1", "谢谢<b>"),
            ("139****1111", "TD"),
        }


def test_replies_are_refused_while_no_token_is_set(web: Web, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    response = _post(web, {"from": PHONE, "text": "TD"}, token="anything")
    assert response.status_code == 503
    assert response.json()["error"].startswith("replies are not taken: no token")


@pytest.mark.parametrize("reply", ["TD", "td", "ＴＤ", "退订", "T", "stop", "Stop!", "N", " n。"])
def test_the_unsubscribe_words(reply: str):
    assert is_unsubscribe(reply)


@pytest.mark.parametrize("reply", ["", "TDD", "不要退订", "no", "1"])
def test_other_replies_are_not_unsubscribing(reply: str):
    assert not is_unsubscribe(reply)
