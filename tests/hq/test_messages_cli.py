"""`kiosk hq messages remind | send-due | list` as HQ's timer and operators run them, with the
file sender named in HQ's config file; bad settings refused in one line, sending nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from edge.security.keys import load_secret
from edge.security.personal import PhoneVault
from hq.audit import Actor
from hq.contact import set_message_consent
from hq.messages import FileSender
from hq.models import CentralMember
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import hq_data_key_file, sqlite_hq_url
from tests.hq.test_staff import ROOT, one_line_error

PHONE = "13812345678"


def _config(tmp_path: Path, messages: str) -> Path:
    path = tmp_path / "hq.toml"
    path.write_text(
        f'database_url = "sqlite+pysqlite:///{tmp_path / "hq.db"}"\n'
        f'data_key_file = "{hq_data_key_file()}"\n\n[messages]\n{messages}'
    )
    return path


def _kiosk(config: Path, *args: str) -> Ran:
    return run_kiosk(
        "hq", "--hq-config", str(config), "messages", *args,
        drop_env=("HQ_", "CREDENTIALS_DIRECTORY"), cwd=ROOT,
    )  # fmt: skip


def _member_with_a_birthday_this_month(tmp_path: Path) -> None:
    engine = make_hq_engine(sqlite_hq_url(tmp_path / "hq.db"))
    vault = PhoneVault(load_secret(Path(hq_data_key_file())), bytes(range(32, 64)))
    now = datetime.now(UTC)
    try:
        with Session(engine) as s, s.begin():
            member = CentralMember(
                id="M1",
                store_id="S001",
                tier="basic",
                phone_masked="138****5678",
                phone_enc=vault.encrypt(PHONE),
                birth_month=now.astimezone(ZoneInfo("Asia/Shanghai")).month,
                created_at=now,
                updated_at=now,
            )
            s.add(member)
            set_message_consent(s, member, "2026-12", now=now, actor=Actor("kiosk", "event"))
    finally:
        engine.dispose()


def test_remind_queues_and_sends_then_list_shows_the_record(tmp_path: Path):
    _member_with_a_birthday_this_month(tmp_path)
    sent = tmp_path / "sent.jsonl"
    # no quiet hours, so the test does not depend on the hour it runs at
    no_quiet_hours = 'quiet_start = "00:00"\nquiet_end = "00:00"\n'
    config = _config(tmp_path, f'sender = "file:{sent}"\n{no_quiet_hours}')

    first = _kiosk(config, "remind")
    assert first.returncode == 0, first.stderr
    assert "1 members with consent: queued 0 points-expiry, 1 birthday" in first.stdout
    assert "1 sent, 0 to be tried again, 0 failed" in first.stdout
    assert [m["to"] for m in FileSender(sent).sent()] == [PHONE]

    again = _kiosk(config, "remind", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["planned"]["queued"]["birthday"] == 0 and result["delivered"]["sent"] == 0
    assert len(FileSender(sent).sent()) == 1

    listed = _kiosk(config, "list", "--member", "M1", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["kind"], row["to"], row["status"], row["attempts"]) == (
        "birthday", "138****5678", "sent", 1,
    )  # fmt: skip
    assert row["provider_ref"] == FileSender(sent).sent()[0]["ref"]
    text = _kiosk(config, "list", "--status", "sent")
    assert "birthday" in text.stdout and "138****5678" in text.stdout and PHONE not in text.stdout
    assert _kiosk(config, "list", "--status", "failed").stdout.strip() == "no messages"
    due = _kiosk(config, "send-due")
    assert due.returncode == 0 and due.stdout.startswith("0 sent"), due.stderr


def test_without_a_sender_or_with_bad_settings_nothing_is_sent(tmp_path: Path):
    _member_with_a_birthday_this_month(tmp_path)
    error = one_line_error(_kiosk(_config(tmp_path, ""), "remind"))
    assert "no message sender is set" in error
    error = one_line_error(_kiosk(_config(tmp_path, "weekly_cap = 0\n"), "send-due"))
    assert "weekly_cap" in error
    gateway = _config(tmp_path, 'sender = "http:https://gw.example"\n')
    error = one_line_error(_kiosk(gateway, "remind"))
    assert "sms-gateway-token" in error
    listed = _kiosk(_config(tmp_path, ""), "list", "--json")
    assert json.loads(listed.stdout) == []
