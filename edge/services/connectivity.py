"""Whether HQ is reachable, as the redemption rules see it (the sync agent records contact)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.services.tx import get_meta, set_meta

HQ_LAST_CONTACT = "hq_last_contact"
OFFLINE_SINCE = "offline_since"


@dataclass(frozen=True)
class Connectivity:
    offline: bool
    since: datetime | None  # when the device last heard from HQ (None: never)


def connectivity(session: Session, app: AppContext, now: datetime) -> Connectivity:
    """Standalone member centers (sync disabled) are their own system of record: never offline.

    With sync enabled, the device counts as offline once HQ has been silent longer than
    ``offline.offline_after_s``; a device that has never reached HQ is offline since it
    first started.
    """
    if not app.config.sync.enabled:
        return Connectivity(False, None)
    last = get_meta(session, HQ_LAST_CONTACT)
    if last is None:
        first = get_meta(session, OFFLINE_SINCE)
        return Connectivity(True, datetime.fromisoformat(first) if first else now)
    last_contact = datetime.fromisoformat(last)
    silent = now - last_contact > timedelta(seconds=app.config.offline.offline_after_s)
    return Connectivity(silent, last_contact)


def record_hq_contact(session: Session, at: datetime) -> None:
    set_meta(session, HQ_LAST_CONTACT, at.isoformat())


def remember_first_start(session: Session, at: datetime) -> None:
    if get_meta(session, OFFLINE_SINCE) is None:
        set_meta(session, OFFLINE_SINCE, at.isoformat())
