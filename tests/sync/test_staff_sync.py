"""Staff accounts managed by HQ, through a real Mosquitto: HQ's store list reaches every kiosk
of the store, and a disabled account fails on the next PIN entry at each of them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import PermissionDenied
from edge.domain.staff import Permission
from edge.protocol import Topics
from edge.services.staff import add_staff, authenticate_staff
from edge.services.staff_lists import hq_manages_staff, staff_list_version
from edge.station.staff_sessions import StaffSessions
from edge.sync.agent import Agent
from hq.audit import Actor
from hq.commands import publish_once, push_staff_list
from hq.models import FleetDevice
from hq.service import HqService
from hq.staff import StaffDesk
from tests.sync.conftest import Runner, make_data_dir, open_app, wait_until
from tests.sync.helpers import hq_config


def has_list(app: AppContext, version: int) -> Callable[[], bool]:
    def check() -> bool:
        with app.db.read() as session:
            return staff_list_version(session, app.store_id) == version

    return check


def refusal(sign_in: Callable[[], object]) -> str:
    with pytest.raises(PermissionDenied) as caught:
        sign_in()
    return caught.value.code


def test_a_disabled_staff_account_fails_on_the_next_pin_entry_at_every_kiosk_of_the_store(
    broker, tmp_path
):
    config = hq_config(broker, tmp_path)
    hq = HqService(config)
    k1 = open_app(make_data_dir(tmp_path, broker, "K001", "S001", 1))
    k3 = open_app(make_data_dir(tmp_path, broker, "K003", "S001", 50_000))
    other = open_app(make_data_dir(tmp_path, broker, "K002", "S002", 100_000))
    # K001 was the store's first kiosk: set up with a local account before HQ took over
    add_staff(k1, "setup", "supervisor", "2580")
    runners = [Runner(hq.run), Runner(Agent(k1).run), Runner(Agent(other).run)]
    desk = StaffDesk(hq.engine)

    def publish() -> int:
        return push_staff_list(config, desk.staff_list("S001")).version

    def hq_knows_s001() -> bool:
        with Session(hq.engine) as s:
            return "S001" in set(s.scalars(select(FleetDevice.store_id)))

    # the station's sign-in (the touchscreen's) at K003, the staff console's service at K001
    screen = StaffSessions(k3)

    def at_k1(staff_id: str, pin: str) -> object:
        return authenticate_staff(k1, staff_id, pin)

    def at_k3(staff_id: str, pin: str) -> object:
        return screen.sign_in(staff_id, pin, "lookup_member")

    try:
        wait_until(hq_knows_s001, 30, "HQ hearing from store S001")
        assert authenticate_staff(k1, "setup", "2580")  # no list yet: the set-up account works
        desk.add("S001", "c1", "clerk", "1357", "张")
        desk.add("S001", "c2", "supervisor", "4826")
        assert publish() == 2
        wait_until(has_list(k1, 2), 30, "HQ's staff list at K001")
        # K003 comes into service after the list was published: the broker kept it for it
        runners.append(Runner(Agent(k3).run))
        wait_until(has_list(k3, 2), 30, "HQ's staff list at K003, retained")
        for sign_in in (at_k1, at_k3):
            assert sign_in("c1", "1357")
            assert sign_in("c2", "4826")
        open_session = screen.sign_in("c1", "1357", "lookup_member")  # signed in at K003
        # HQ manages the store now: the local set-up account is done
        assert refusal(lambda: at_k1("setup", "2580")) == "staff_not_listed"

        desk.disable("S001", "c1", actor=Actor("ops"))
        assert publish() == 3
        for app in (k1, k3):
            wait_until(has_list(app, 3), 30, f"the disable at {app.device_id}")
        # the very next PIN entry, at each kiosk of the store
        for sign_in in (at_k1, at_k3):
            assert refusal(partial(sign_in, "c1", "1357")) == "staff_disabled"
            assert sign_in("c2", "4826")  # the others go on
        # and the touchscreen session c1 opened before ends at its next action
        gone = partial(screen.identity, open_session, Permission.LOOKUP_MEMBER)
        assert refusal(gone) == "staff_disabled"

        desk.set_pin("S001", "c2", "9173")
        assert publish() == 4
        for app in (k1, k3):
            wait_until(has_list(app, 4), 30, f"the new PIN at {app.device_id}")
        for sign_in in (at_k1, at_k3):
            assert refusal(partial(sign_in, "c2", "4826")) == "bad_credentials"
            assert sign_in("c2", "9173")
        assert authenticate_staff(k3, "c2", "9173", Permission.MANAGE_STAFF).role == "supervisor"

        # a list HQ's key did not sign (on the store's topic, retained) changes nothing, and
        # the agents go on: HQ's next list is applied (a forged v99 would have blocked it)
        forged = desk.staff_list("S001").model_copy(update={"version": 99, "accounts": []})
        publish_once(config, Topics(config.topic_prefix).staff("S001"), forged, retain=True)
        desk.enable("S001", "c1")
        assert publish() == 5
        for app in (k1, k3):
            wait_until(has_list(app, 5), 30, f"HQ's next list at {app.device_id}")
        assert at_k1("c1", "1357") and at_k3("c2", "9173")

        # the other store heard nothing of it (its kiosks may not even read S001's topic)
        with other.db.read() as session:
            assert not hq_manages_staff(session)
    finally:
        for r in reversed(runners):
            r.stop()
        for app in (k1, k3, other):
            app.close()
