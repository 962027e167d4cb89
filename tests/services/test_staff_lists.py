"""HQ's staff list at the kiosk: signed, for this store, newer than the one in force; HQ's
accounts created and updated, a disabled one refused at its next PIN entry, and once a list
is in force the device's own accounts no longer sign in."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.cli.audit_commands import render_status
from edge.domain.errors import PermissionDenied
from edge.domain.staff import Permission
from edge.protocol import STAFF_SIGNING_DOMAIN, StaffAccount, StaffList
from edge.security.pins import hash_pin
from edge.services.pushes import apply_staff_list
from edge.services.staff import add_staff, authenticate_staff, recheck_staff
from edge.services.status import audit_log, center_status
from edge.storage.models import Staff
from hq.commands import sign_message

HQ = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


@functools.cache
def pin_hash(pin: str) -> str:  # scrypt is slow on purpose: each PIN once per run
    return hash_pin(pin)


def account(staff_id: str, pin: str = "2580", role: str = "clerk", active: bool = True):
    return StaffAccount(
        staff_id=staff_id, name=f"n-{staff_id}", role=role, pin_hash=pin_hash(pin), active=active
    )


def staff_list(version: int, *accounts: StaffAccount, store: str = "S001", key=HQ) -> StaffList:
    unsigned = StaffList(
        store_id=store, version=version, issued_at=datetime.now(UTC), accounts=list(accounts)
    )
    return sign_message(key, STAFF_SIGNING_DOMAIN, unsigned)


def refused_code(app, staff_id: str, pin: str) -> str:
    with pytest.raises(PermissionDenied) as caught:
        authenticate_staff(app, staff_id, pin)
    return caught.value.code


def test_hq_accounts_are_created_and_sign_in_with_the_pin_hq_hashed(app):
    pushed = staff_list(1, account("c1"), account("s1", "1357", "supervisor"))
    assert apply_staff_list(app, pushed, HQ.public_key()).applied
    assert authenticate_staff(app, "c1", "2580").role == "clerk"
    assert authenticate_staff(app, "s1", "1357", Permission.MANAGE_STAFF).role == "supervisor"
    with app.db.read() as s:
        row = s.get(Staff, "c1")
        assert row is not None and row.name == "n-c1" and row.pin_hash == pin_hash("2580")
    (record,) = [a for a in audit_log(app) if a.action == "staff.list"]
    assert record.actor == "hq" and record.subject == "1"
    assert center_status(app).staff_list_version == 1
    assert "staff        HQ's list version 1" in render_status(center_status(app))


def test_unsigned_foreign_older_and_other_store_lists_change_nothing(app, caplog):
    assert apply_staff_list(app, staff_list(2, account("c1")), HQ.public_key()).applied
    unsigned = staff_list(3, account("c1", active=False)).model_copy(update={"signature": ""})
    cases = {
        "bad signature": [
            unsigned,
            staff_list(3, account("c1", active=False), key=OTHER),
            # signed, then changed on the way: the signature no longer covers it
            staff_list(3, account("c1")).model_copy(
                update={"accounts": [account("c1", active=False)]}
            ),
        ],
        "not newer": [
            staff_list(1, account("c1", active=False)),
            staff_list(2, account("c1", active=False)),
        ],
        "another store": [staff_list(3, account("c1", active=False), store="S002")],
    }
    for reason, pushes in cases.items():
        for pushed in pushes:
            outcome = apply_staff_list(app, pushed, HQ.public_key())
            assert (outcome.applied, outcome.reason) == (False, reason)
    assert apply_staff_list(app, staff_list(3, account("c1")), None).reason == "bad signature"
    assert authenticate_staff(app, "c1", "2580").staff_id == "c1"  # still enabled
    assert "not signed by HQ" in caplog.text and "store S002 refused" in caplog.text
    assert "version 1 refused: version 2 is in force" in caplog.text


def test_an_account_hq_disabled_is_refused_at_its_next_pin_entry(app):
    apply_staff_list(app, staff_list(1, account("c1"), account("c2")), HQ.public_key())
    assert authenticate_staff(app, "c1", "2580")
    disabled = staff_list(2, account("c1", active=False), account("c2"))
    apply_staff_list(app, disabled, HQ.public_key())
    with pytest.raises(PermissionDenied) as caught:
        authenticate_staff(app, "c1", "2580")
    assert caught.value.code == "staff_disabled"
    assert "this account was disabled by HQ" in caught.value.message
    # a wrong PIN says no more than for any account, and counts towards the lockout
    assert refused_code(app, "c1", "9731") == "bad_credentials"
    with app.db.read() as s:
        row = s.get(Staff, "c1")
        assert row is not None and row.failed_attempts == 1
    assert authenticate_staff(app, "c2", "2580")  # the others go on
    refusals = [a for a in audit_log(app) if a.action == "staff.auth_refused"]
    assert [r.detail["reason"] for r in refusals] == ["staff_disabled"]
    # enabled again by HQ: signs in
    apply_staff_list(app, staff_list(3, account("c1"), account("c2")), HQ.public_key())
    assert authenticate_staff(app, "c1", "2580").staff_id == "c1"


def test_a_new_pin_from_hq_replaces_the_old_one_and_the_lockout_stays_local(app):
    apply_staff_list(app, staff_list(1, account("c1")), HQ.public_key())
    for _ in range(2):
        assert refused_code(app, "c1", "9731") == "bad_credentials"
    apply_staff_list(app, staff_list(2, account("c1", "4826", "supervisor")), HQ.public_key())
    assert refused_code(app, "c1", "2580") == "bad_credentials"
    with app.db.read() as s:
        row = s.get(Staff, "c1")
        assert row is not None and row.failed_attempts == 3  # counted here, not reset by HQ
    assert authenticate_staff(app, "c1", "4826").role == "supervisor"


def test_the_local_set_up_account_works_only_until_hq_manages_the_store(app):
    assert "no list from HQ for this store yet" in render_status(center_status(app))
    setup = add_staff(app, "setup", "supervisor", "2580")  # the first one: no authoriser
    add_staff(app, "local2", "clerk", "1357", by=setup)
    assert authenticate_staff(app, "setup", "2580")
    apply_staff_list(app, staff_list(1, account("c1")), HQ.public_key())
    with pytest.raises(PermissionDenied) as caught:
        authenticate_staff(app, "setup", "2580")
    assert caught.value.code == "staff_not_listed"
    assert "not on HQ's staff list for store S001" in caught.value.message
    assert refused_code(app, "local2", "1357") == "staff_not_listed"
    assert refused_code(app, "local2", "9731") == "bad_credentials"
    (applied,) = [a for a in audit_log(app) if a.action == "staff.list"]
    assert applied.detail["local_disabled"] == ["local2", "setup"]
    # adding staff here is HQ's now, even for a supervisor of HQ's list
    with pytest.raises(PermissionDenied) as refused:
        add_staff(app, "local3", "clerk", "4826", by=authenticate_staff(app, "c1", "2580"))
    assert refused.value.code == "staff_managed_by_hq"
    # HQ may take over a local account by listing its id: then HQ's hash and state count
    apply_staff_list(app, staff_list(2, account("c1"), account("setup", "4826")), HQ.public_key())
    assert refused_code(app, "setup", "2580") == "bad_credentials"
    assert authenticate_staff(app, "setup", "4826").role == "clerk"
    assert refused_code(app, "local2", "1357") == "staff_not_listed"


def test_an_account_needs_a_pin_hash_and_a_known_role():
    """A plaintext PIN, an unknown role or an account listed twice makes the whole list
    unreadable: the agent drops it as it does any malformed message."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        StaffAccount(staff_id="c1", role="clerk", pin_hash="2580", active=True)
    with pytest.raises(ValidationError):
        StaffAccount(staff_id="c1", role="cashier", pin_hash=pin_hash("2580"), active=True)
    with pytest.raises(ValidationError, match="listed twice"):
        staff_list(1, account("c1"), account("c1", active=False))


def test_a_lasting_sign_in_follows_what_hq_changed_since(app):
    apply_staff_list(app, staff_list(1, account("c1", role="supervisor")), HQ.public_key())
    signed_in = authenticate_staff(app, "c1", "2580")
    assert recheck_staff(app, signed_in).role == "supervisor"
    apply_staff_list(app, staff_list(2, account("c1", role="clerk")), HQ.public_key())
    assert recheck_staff(app, signed_in).role == "clerk"
    apply_staff_list(app, staff_list(3, account("c1", active=False)), HQ.public_key())
    with pytest.raises(PermissionDenied) as caught:
        recheck_staff(app, signed_in)
    assert caught.value.code == "staff_disabled"


def test_a_device_moved_to_another_store_takes_that_stores_list_whatever_its_version(
    make_app,
):
    before = make_app()  # at S001
    apply_staff_list(before, staff_list(7, account("c1")), HQ.public_key())
    assert authenticate_staff(before, "c1", "2580")
    before.close()
    moved = make_app('[device]\ndevice_id = "K001"\nstore_id = "S002"\n')
    assert moved.store_id == "S002"
    # S001's accounts are not S002's: none signs in until S002's list comes, nor is one added
    assert refused_code(moved, "c1", "2580") == "staff_not_listed"
    with pytest.raises(PermissionDenied):
        add_staff(moved, "local", "clerk", "1357")
    assert "no list from HQ for this store yet" in render_status(center_status(moved))
    # S002's list, though its version is lower than S001's was
    assert apply_staff_list(
        moved, staff_list(2, account("d1"), store="S002"), HQ.public_key()
    ).applied
    assert authenticate_staff(moved, "d1", "2580").staff_id == "d1"
    assert refused_code(moved, "c1", "2580") == "staff_not_listed"
    assert center_status(moved).staff_list_version == 2
    older = staff_list(1, account("d1", active=False), store="S002")
    assert apply_staff_list(moved, older, HQ.public_key()).reason == "not newer"
