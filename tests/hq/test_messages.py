"""Messages to members: queued in HQ's database, tried, retried with backoff, recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from edge.security.personal import PhoneVault
from hq.messages import FAILED, QUEUED, SENT, FileSender, RetryPolicy, SendFailed, attempt, enqueue
from hq.models import HqMessage

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
VAULT = PhoneVault(bytes(range(32)), bytes(range(32, 64)))


class Flaky:
    """Fails its first ``failures`` sends (retryable or not), then delivers."""

    name = "flaky"

    def __init__(self, failures: int, *, retryable: bool = True) -> None:
        self.failures, self.retryable, self.calls = failures, retryable, 0

    def send(self, to: str, text: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise SendFailed(f"gateway said no ({self.calls})", retryable=self.retryable)
        return f"ref-{self.calls}"


def _queue(session: Session, **extra) -> HqMessage:
    message = enqueue(
        session,
        VAULT,
        kind="test",
        member_id="M1",
        phone="13812345678",
        text="你好",
        sender="file",
        now=NOW,
        **extra,
    )
    assert message is not None
    return message


def test_a_sent_message_keeps_only_the_masked_number_and_its_reference(engine, tmp_path: Path):
    sender = FileSender(tmp_path / "sent.jsonl")
    with Session(engine) as session, session.begin():
        message = _queue(session)
        assert attempt(session, VAULT, message, sender, NOW)
        message_id = message.id
    with Session(engine) as session:
        row = session.get(HqMessage, message_id)
        assert row is not None
        assert (row.status, row.attempts, row.phone_enc) == (SENT, 1, None)
        assert row.phone_masked == "138****5678" and row.sent_at == NOW
        assert row.provider_ref == sender.sent()[0]["ref"]
    assert sender.sent()[0]["to"] == "13812345678" and sender.sent()[0]["text"] == "你好"


def test_a_failing_sender_is_retried_with_backoff_then_recorded_as_failed(engine):
    sender, policy = Flaky(10), RetryPolicy(tries=3, first_wait_s=60)
    with Session(engine) as session, session.begin():
        message = _queue(session)
        moment = NOW
        for waited in (60, 120):
            assert not attempt(session, VAULT, message, sender, moment, policy)
            assert message.status == QUEUED
            assert message.due_at == moment + timedelta(seconds=waited)
            moment = message.due_at
        assert not attempt(session, VAULT, message, sender, moment, policy)
        assert (message.status, message.attempts, message.phone_enc) == (FAILED, 3, None)
        assert message.last_error == "gateway said no (3)"
        assert not attempt(session, VAULT, message, sender, moment, policy)  # given up
    assert sender.calls == 3


def test_a_refusal_that_cannot_be_retried_fails_at_once(engine):
    sender = Flaky(1, retryable=False)
    with Session(engine) as session, session.begin():
        message = _queue(session)
        assert not attempt(session, VAULT, message, sender, NOW)
        assert (message.status, message.attempts) == (FAILED, 1)


def test_a_reminder_is_queued_once_per_dedupe_key(engine):
    with Session(engine) as session, session.begin():
        assert _queue(session, dedupe_key="expiry:M1:2027-01-31") is not None
        again = enqueue(
            session,
            VAULT,
            kind="test",
            member_id="M1",
            phone="13812345678",
            text="again",
            sender="file",
            now=NOW,
            dedupe_key="expiry:M1:2027-01-31",
        )
        assert again is None


def test_consent_to_messages_is_given_and_withdrawn_with_an_audit_record(engine):
    from hq.audit import Actor, entries
    from hq.contact import may_message, set_message_consent
    from hq.models import CentralMember

    with Session(engine) as session, session.begin():
        member = CentralMember(
            id="M1", store_id="S001", tier="basic", created_at=NOW, updated_at=NOW
        )
        session.add(member)
        assert not may_message(member)
        member.phone_enc = VAULT.encrypt("13812345678")
        actor = Actor("member", "member")
        assert set_message_consent(session, member, "2026-12", now=NOW, actor=actor)
        assert may_message(member)
        assert not set_message_consent(session, member, "2026-12", now=NOW, actor=actor)
        assert set_message_consent(session, member, None, now=NOW, actor=actor)
        assert not may_message(member) and member.message_consent_at == NOW
    with Session(engine) as session:
        rows, total = entries(session, text="M1")
        assert total == 2  # newest first
        assert [row.after for row in rows] == [
            {"message_consent": None},
            {"message_consent": "2026-12"},
        ]


def test_a_sender_setting_naming_no_known_sender_is_refused(tmp_path: Path):
    import pytest

    from edge.domain.errors import ConfigError
    from hq.messages import sender_from_spec

    assert isinstance(sender_from_spec(f"file:{tmp_path}/out.jsonl"), FileSender)
    with pytest.raises(ConfigError, match="unknown message sender"):
        sender_from_spec("pigeon:loft")
