"""What HQ's commands answer when the device's own rules say no, or the work cannot be done."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from edge.security.keys import load_public_key
from edge.services.members import register_member
from edge.services.points import claim_birthday_bonus
from edge.storage.models import AuditRecord
from edge.sync.commands import CommandRunner
from hq.commands import load_command_key, sign_command
from tests.sync.conftest import make_data_dir, open_app

PERMITTED = 'permitted_commands = ["ping", "block_card", "update", "birthday_bonus"]'


def test_a_refusal_from_any_action_is_refused_and_other_errors_failed(broker, tmp_path):
    app = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1, extra=PERMITTED))
    runner = CommandRunner(app, load_public_key(app.data_dir / "keys" / "hq-command.pub"))
    # a command this build of the device knows besides the shipped ones, running a service
    member = register_member(app, "13800138000", consent=True, name="Li")  # no birthday
    runner.actions["birthday_bonus"] = lambda args: {
        "points": claim_birthday_bonus(app, str(args["card_no"])).points
    }
    hq_key = load_command_key(broker.directory / "hq-command.key")
    now = datetime.now(UTC)

    bonus = sign_command(hq_key, "K001", "birthday_bonus", {"card_no": member.card_no}, now=now)
    result = runner.handle(bonus, now)
    assert (result.status, result.detail["error"]) == ("refused", "no_birthday"), result.detail
    assert result.detail["reason"] == "no birthday on file for this member"
    # the refusal is recorded: the same transaction again is answered from the record
    again = runner.handle(bonus, now)
    assert (again.status, again.detail["error"], again.detail["replayed"]) == (
        "refused",
        "no_birthday",
        True,
    )

    # no HQ update key on this device: the update is refused, not failed
    assert not (app.data_dir / "keys" / "hq-update.pub").exists()
    offer: dict[str, str | int | bool] = {
        "url": "http://127.0.0.1:9/b.tar",
        "sha256": "0" * 64,
        "size": 10,
        "version": "9.9.9",
    }
    update = runner.handle(sign_command(hq_key, "K001", "update", offer, now=now), now)
    assert (update.status, update.detail["error"]) == ("refused", "no_update_key"), update.detail

    # bad input is not a rule saying no: it failed, with the error's code and message
    bad_card = sign_command(hq_key, "K001", "block_card", {"card_no": "12"}, now=now)
    failed = runner.handle(bad_card, now)
    assert (failed.status, failed.detail["error"]) == ("failed", "bad_card_number")
    assert "message" in failed.detail and "reason" not in failed.detail

    with app.db.read() as session:
        audited = session.scalars(
            select(AuditRecord.detail).where(AuditRecord.action == "command.birthday_bonus")
        ).all()
    assert len(audited) == 1 and "refused" in str(audited[0])
    app.close()
