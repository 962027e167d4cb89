"""Staff accounts managed by HQ: created, disabled, enabled and given a new PIN here, pushed
to the store's kiosks as one signed list (``hq/staff/{store}``, retained).

Every change bumps the store's list version and is recorded (who, what, when) in
``hq_staff_change``, in the transaction that makes it. PINs are hashed here with the kiosks'
memory-hard function (scrypt, :func:`edge.security.pins.hash_pin`) before anything is
stored: HQ keeps and sends only the hash, never the PIN. The list published is read from the
database at publishing time, so whatever order two changes publish in, the latest version
is what both send (and what the broker retains).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.staff import parse_role, validate_staff_id
from edge.protocol import ProtocolError, StaffAccount, StaffList, check_name
from edge.security.pins import hash_pin, validate_pin
from hq import audit
from hq.audit import Actor
from hq.models import EnrolledDevice, FleetDevice, HqStaffAccount, HqStaffChange, HqStaffList

Clock = Callable[[], datetime]

HQ = Actor("hq")  # a change made by HQ's own code, not by a person


@dataclass(frozen=True)
class StaffChange:
    """What one change did: the account, the action and the store's list version it made."""

    store_id: str
    staff_id: str
    action: str
    version: int


@dataclass(frozen=True)
class StaffRow:
    """An account as ``kiosk hq staff list`` shows it (never its PIN hash)."""

    store_id: str
    staff_id: str
    name: str
    role: str
    active: bool
    updated_at: datetime


def check_store(store_id: str) -> str:
    """A store id usable in a topic, or a one-line error."""
    try:
        return check_name(store_id.strip())
    except ProtocolError:
        raise InvalidInput(
            f"'{store_id}' is not a valid store id (letters, digits, _ . : -)", code="bad_store"
        ) from None


def check_staff_id(staff_id: str) -> str:
    """A staff id every kiosk takes (ASCII letters and digits, ``-``, ``_``, ``.``)."""
    ident = validate_staff_id(staff_id)
    if not ident.isascii():
        raise InvalidInput(
            f"'{staff_id}' is not a valid staff id (letters, digits, - _ .)", code="bad_staff_id"
        )
    return ident


def known_stores(session: Session) -> set[str]:
    """Stores HQ knows: of an enrolled device, of a device that reported, or with staff."""
    enrolled = session.scalars(select(EnrolledDevice.store_id).distinct())
    reported = session.scalars(select(FleetDevice.store_id).distinct())
    staffed = session.scalars(select(HqStaffList.store_id))
    return {s for s in (*enrolled, *reported, *staffed) if s}


class StaffDesk:
    """HQ's staff accounts on HQ's database (see the module docstring)."""

    def __init__(self, engine: Engine, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock

    def add(
        self, store_id: str, staff_id: str, role: str, pin: str, name: str = "", actor: Actor = HQ
    ) -> StaffChange:
        """A new account at ``store_id``, enabled, with ``pin`` (hashed here).

        Raises:
            InvalidInput: a bad store id, staff id, role or PIN.
            NotFound: HQ knows no such store.
            Refusal: ``staff_exists``: the store has an account with that id.
        """
        store, ident = check_store(store_id), check_staff_id(staff_id)
        role_v = parse_role(role)
        validate_pin(pin)
        pin_hash = hash_pin(pin)
        with Session(self.engine) as session, session.begin():
            self._known(session, store)
            if session.get(HqStaffAccount, (store, ident)) is not None:
                raise Refusal(f"store {store} has staff {ident} already", code="staff_exists")
            now = self.clock()
            session.add(
                HqStaffAccount(
                    store_id=store,
                    staff_id=ident,
                    name=name.strip()[:32],
                    role=role_v.value,
                    pin_hash=pin_hash,
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
            return self._record(session, store, ident, "add", actor, now, role=role_v.value)

    def disable(self, store_id: str, staff_id: str, actor: Actor = HQ) -> StaffChange:
        """Disables an account: refused at its next PIN entry on every kiosk of the store."""
        return self._set_active(store_id, staff_id, False, actor)

    def enable(self, store_id: str, staff_id: str, actor: Actor = HQ) -> StaffChange:
        """Enables a disabled account again."""
        return self._set_active(store_id, staff_id, True, actor)

    def set_pin(self, store_id: str, staff_id: str, pin: str, actor: Actor = HQ) -> StaffChange:
        """Gives an account a new PIN (hashed here); its old PIN stops working everywhere."""
        store, ident = check_store(store_id), check_staff_id(staff_id)
        validate_pin(pin)
        pin_hash = hash_pin(pin)
        with Session(self.engine) as session, session.begin():
            account = self._account(session, store, ident)
            now = self.clock()
            account.pin_hash, account.updated_at = pin_hash, now
            return self._record(session, store, ident, "pin", actor, now)

    def accounts(self, store_id: str | None = None) -> list[StaffRow]:
        """Every account, or one store's, by store and id."""
        query = select(HqStaffAccount).order_by(HqStaffAccount.store_id, HqStaffAccount.staff_id)
        if store_id is not None:
            query = query.where(HqStaffAccount.store_id == check_store(store_id))
        with Session(self.engine) as session:
            return [
                StaffRow(a.store_id, a.staff_id, a.name, a.role, a.active, a.updated_at)
                for a in session.scalars(query)
            ]

    def staff_list(self, store_id: str) -> StaffList:
        """The store's whole list at its latest version, unsigned.

        Raises:
            NotFound: ``no_staff_list``: HQ has made no change to the store's staff yet.
        """
        store = check_store(store_id)
        with Session(self.engine) as session:
            head = session.get(HqStaffList, store)
            if head is None:
                raise NotFound(f"store {store} has no staff accounts at HQ", code="no_staff_list")
            accounts = session.scalars(
                select(HqStaffAccount)
                .where(HqStaffAccount.store_id == store)
                .order_by(HqStaffAccount.staff_id)
            )
            return StaffList(
                store_id=store,
                version=head.version,
                issued_at=head.updated_at,
                accounts=[
                    StaffAccount(
                        staff_id=a.staff_id,
                        name=a.name,
                        role=a.role,
                        pin_hash=a.pin_hash,
                        active=a.active,
                    )
                    for a in accounts
                ],
            )

    def _set_active(self, store_id: str, staff_id: str, active: bool, actor: Actor) -> StaffChange:
        store, ident = check_store(store_id), check_staff_id(staff_id)
        with Session(self.engine) as session, session.begin():
            account = self._account(session, store, ident)
            if account.active == active:
                state = "enabled" if active else "disabled"
                raise Refusal(
                    f"staff {ident} of store {store} is {state} already", code="no_change"
                )
            now = self.clock()
            account.active, account.updated_at = active, now
            return self._record(
                session, store, ident, "enable" if active else "disable", actor, now
            )

    @staticmethod
    def _known(session: Session, store: str) -> None:
        if store not in known_stores(session):
            raise NotFound(
                f"HQ knows no store {store} (no device of it is enrolled or has reported)",
                code="unknown_store",
            )

    def _account(self, session: Session, store: str, ident: str) -> HqStaffAccount:
        self._known(session, store)
        account = session.get(HqStaffAccount, (store, ident), with_for_update=True)
        if account is None:
            raise NotFound(f"store {store} has no staff {ident} at HQ", code="unknown_staff")
        return account

    @staticmethod
    def _record(
        session: Session,
        store: str,
        ident: str,
        action: str,
        actor: Actor,
        now: datetime,
        **detail: str,
    ) -> StaffChange:
        """Bumps the store's list version and records the change, in the store's staff
        history and in HQ's audit log, in the caller's transaction (the version row is locked
        until it commits: one version, one list). A PIN is never recorded."""
        head = session.get(HqStaffList, store, with_for_update=True)
        if head is None:
            head = HqStaffList(store_id=store, version=0, updated_at=now)
            session.add(head)
        head.version += 1
        head.updated_at = now
        session.add(
            HqStaffChange(
                at=now,
                store_id=store,
                staff_id=ident,
                action=action,
                actor=actor.name[:64],
                version=head.version,
                detail=json.dumps(detail, sort_keys=True),
            )
        )
        audit.record(
            session,
            actor,
            f"staff.{action}",
            f"{store}/{ident}",
            now,
            after={**detail, "list_version": head.version},
            store_id=store,
        )
        return StaffChange(store, ident, action, head.version)
