"""Staff accounts at HQ: kept per store with the PIN only as its hash, every change recorded
and versioned; ``kiosk hq staff ...`` as HQ staff run it, publishing the store's whole list
signed and retained; bad input is one line and changes nothing."""

from __future__ import annotations

import getpass
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.protocol import StaffList, Topics, decode
from edge.security.keys import load_public_key
from edge.security.pins import verify_pin
from edge.services.pushes import staff_list_signed
from hq.audit import Actor
from hq.models import AuditRecord, FleetDevice, HqStaffAccount, HqStaffChange
from hq.service import make_hq_engine
from hq.staff import StaffDesk
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import sqlite_hq_url
from tests.sync.helpers import arriving, client

ROOT = Path(__file__).resolve().parents[2]


def know_store(engine, store_id: str = "S001") -> None:
    """A store HQ knows: one of its kiosks has reported."""
    with Session(engine) as s, s.begin():
        s.add(FleetDevice(device_id=f"K-{store_id}", store_id=store_id, role="kiosk"))


def test_the_desk_keeps_hashes_versions_and_a_record_of_every_change(engine):
    know_store(engine)
    desk = StaffDesk(engine)
    assert desk.add("S001", "c1", "clerk", "2580", "张", actor=Actor("ops-li")).version == 1
    assert desk.add("S001", "s1", "Supervisor", "1357").version == 2
    assert desk.disable("S001", "c1", actor=Actor("ops-li")).version == 3
    assert desk.set_pin("S001", "s1", "4826").version == 4
    assert desk.enable("S001", "c1").version == 5
    pushed = desk.staff_list("S001")
    assert (pushed.store_id, pushed.version) == ("S001", 5)
    by_id = {a.staff_id: a for a in pushed.accounts}
    assert (by_id["c1"].role, by_id["c1"].name, by_id["c1"].active) == ("clerk", "张", True)
    assert by_id["s1"].role == "supervisor"
    assert verify_pin("4826", by_id["s1"].pin_hash) and not verify_pin("1357", by_id["s1"].pin_hash)
    with Session(engine) as s:
        hashes = list(s.scalars(select(HqStaffAccount.pin_hash)))
        changes = list(s.scalars(select(HqStaffChange).order_by(HqStaffChange.id)))
    assert all(h.startswith("scrypt$") for h in hashes)
    assert [(c.staff_id, c.action, c.actor, c.version) for c in changes] == [
        ("c1", "add", "ops-li", 1),
        ("s1", "add", "hq", 2),
        ("c1", "disable", "ops-li", 3),
        ("s1", "pin", "hq", 4),
        ("c1", "enable", "hq", 5),
    ]
    assert not any("2580" in c.detail or "4826" in c.detail for c in changes)
    assert [(r.staff_id, r.active) for r in desk.accounts("S001")] == [("c1", True), ("s1", True)]
    # and each in HQ's audit log, beside every other change made at HQ (never a PIN)
    with Session(engine) as s:
        audit = list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    assert [(a.actor, a.action, a.subject, a.store_id) for a in audit] == [
        ("ops-li", "staff.add", "S001/c1", "S001"),
        ("hq", "staff.add", "S001/s1", "S001"),
        ("ops-li", "staff.disable", "S001/c1", "S001"),
        ("hq", "staff.pin", "S001/s1", "S001"),
        ("hq", "staff.enable", "S001/c1", "S001"),
    ]
    assert '"role": "clerk"' in audit[0].after and '"list_version": 1' in audit[0].after
    assert not any("2580" in a.after or "4826" in a.after or "scrypt" in a.after for a in audit)


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda d: d.add("S001", "c 1", "clerk", "2580"), InvalidInput, "bad_staff_id"),
        (lambda d: d.add("S001", "员工1", "clerk", "2580"), InvalidInput, "bad_staff_id"),
        (lambda d: d.add("S001", "c2", "cashier", "2580"), InvalidInput, "bad_role"),
        (lambda d: d.add("S001", "c2", "clerk", "1234"), InvalidInput, "weak_pin"),
        (lambda d: d.add("S001", "c2", "clerk", "12a4"), InvalidInput, "weak_pin"),
        (lambda d: d.add("S0/1", "c2", "clerk", "2580"), InvalidInput, "bad_store"),
        (lambda d: d.add("S777", "c2", "clerk", "2580"), NotFound, "unknown_store"),
        (lambda d: d.add("S001", "c1", "clerk", "2580"), Refusal, "staff_exists"),
        (lambda d: d.disable("S001", "nobody"), NotFound, "unknown_staff"),
        (lambda d: d.enable("S001", "c1"), Refusal, "no_change"),
        (lambda d: d.set_pin("S001", "c1", "0000"), InvalidInput, "weak_pin"),
        (lambda d: d.staff_list("S002"), NotFound, "no_staff_list"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(tmp_path, call, error, code):
    engine = make_hq_engine(sqlite_hq_url(tmp_path / "hq.db"))
    try:
        know_store(engine)
        know_store(engine, "S002")
        desk = StaffDesk(engine)
        desk.add("S001", "c1", "clerk", "2580")
        with pytest.raises(error) as caught:
            call(desk)
        assert caught.value.code == code
        assert desk.staff_list("S001").version == 1
        with Session(engine) as s:
            assert len(list(s.scalars(select(HqStaffChange)))) == 1
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the console


def hq_staff(broker, db_url: str, *args: str, stdin: str = "") -> Ran:
    return run_kiosk(
        "hq", "--db", db_url, "--broker-port", str(broker.port),
        "--tls-dir", str(broker.directory), "staff", *args,
        stdin=stdin, drop_env=("HQ_",), cwd=ROOT,
    )  # fmt: skip


def one_line_error(proc: Ran | subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def retained_list(broker, store_id: str) -> StaffList:
    link = client(broker, "hq", [(Topics().staff(store_id), 1)], client_id="hq-reads-staff")
    link.start()
    try:
        assert link.wait_connected(10)
        # a topic holds one retained message, sent as the subscription is taken
        message = next(arriving(link, 10), None)
    finally:
        link.close()
    assert message is not None, f"nothing retained for {store_id}"
    assert message.retain
    return decode(StaffList, message.payload)


def test_hq_staff_commands_publish_the_stores_list_signed_and_retained(broker, tmp_path):
    url = sqlite_hq_url(tmp_path / "hq.db")
    engine = make_hq_engine(url)
    know_store(engine)
    engine.dispose()
    hq_key = load_public_key(broker.directory / "hq-command.pub")

    added = hq_staff(broker, url, "add", "--store", "S001", "--id", "c1", "--role", "clerk",
                     "--name", "张", stdin="2580\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "staff c1 of store S001: added; staff list version 1 published" in added.stdout
    pushed = retained_list(broker, "S001")
    assert pushed.version == 1 and staff_list_signed(pushed, hq_key)
    assert "2580" not in pushed.model_dump_json()
    assert verify_pin("2580", pushed.accounts[0].pin_hash)

    hq_staff(broker, url, "add", "--store", "S001", "--id", "c2", "--role", "clerk",
             stdin="1357\n")  # fmt: skip
    disabled = hq_staff(broker, url, "disable", "--store", "S001", "--id", "c1",
                        "--actor", "ops-wang")  # fmt: skip
    assert disabled.returncode == 0, disabled.stderr
    engine = make_hq_engine(url)
    with Session(engine) as s:  # HQ's audit names who: --actor, else the login name
        who = [(a.actor, a.source, a.action) for a in s.scalars(select(AuditRecord))]
    engine.dispose()
    assert who == [
        (getpass.getuser(), "cli", "staff.add"),
        (getpass.getuser(), "cli", "staff.add"),
        ("ops-wang", "cli", "staff.disable"),
    ]
    new_pin = hq_staff(broker, url, "pin", "--store", "S001", "--id", "c2", stdin="4826\n")
    assert new_pin.returncode == 0, new_pin.stderr
    pushed = retained_list(broker, "S001")
    assert pushed.version == 4 and staff_list_signed(pushed, hq_key)
    by_id = {a.staff_id: a for a in pushed.accounts}
    assert by_id["c1"].active is False and verify_pin("4826", by_id["c2"].pin_hash)

    listing = hq_staff(broker, url, "list", "--store", "S001")
    assert listing.returncode == 0
    assert [line.split()[:4] for line in listing.stdout.splitlines()[1:]] == [
        ["S001", "c1", "clerk", "disabled"],
        ["S001", "c2", "clerk", "active"],
    ]
    enabled = hq_staff(broker, url, "enable", "--store", "S001", "--id", "c1")
    assert "enabled; staff list version 5 published" in enabled.stdout

    # bad input: one line each, nothing changed, nothing published
    for args, stdin, says in [
        (("add", "--store", "S001", "--id", "c3", "--role", "cashier"), "2580\n", "unknown role"),
        (("add", "--store", "S001", "--id", "c3", "--role", "clerk"), "1111\n", "PIN"),
        (("add", "--store", "S001", "--id", "c3", "--role", "clerk"), "", "standard input"),
        (("add", "--store", "S009", "--id", "c3", "--role", "clerk"), "2580\n", "no store S009"),
        (("add", "--store", "S001", "--id", "c 3", "--role", "clerk"), "2580\n", "staff id"),
        (("add", "--store", "S001", "--id", "c1", "--role", "clerk"), "2580\n", "already"),
        (("disable", "--store", "S001", "--id", "c9"), "", "no staff c9"),
        (("enable", "--store", "S001", "--id", "c1"), "", "enabled already"),
        (("pin", "--store", "S001", "--id", "c2"), "9999\n", "PIN"),
    ]:
        line = one_line_error(hq_staff(broker, url, *args, stdin=stdin))
        assert says in line, (args, line)
    assert retained_list(broker, "S001").version == 5

    # the broker away: saved, and the one line says how to publish it later
    broker.stop()
    away = hq_staff(broker, url, "disable", "--store", "S001", "--id", "c2")
    line = one_line_error(away)
    assert "saved at HQ as staff list version 6" in line and "staff publish --store S001" in line
    broker.start()
    again = hq_staff(broker, url, "publish", "--store", "S001")
    assert again.returncode == 0, again.stderr
    assert retained_list(broker, "S001").version == 6
    assert datetime.now(UTC) >= pushed.issued_at
