"""Tables of the sync agent: inbound messages handled or set aside, and peripherals' health."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from edge.storage.models import Base
from edge.storage.types import UTCDateTime


class InboundMessage(Base):
    """A message from HQ or a lane already applied (by its id), with what it produced.

    A command or blocklist update delivered twice (QoS 1 redelivery, HQ resending) is answered
    from here instead of being applied again.
    """

    __tablename__ = "sync_inbound"
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(Text, default="{}")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PeripheralHealth(Base):
    """The latest health a peripheral's driver reported (written by the app, read for telemetry)."""

    __tablename__ = "peripheral_health"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(256), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SetAside(Base):
    """A message the agent could not apply yet, kept instead of dropped or crashed on.

    ``replica:<event id>``: another store's event whose member is not here yet
    (``waiting_for``), applied as soon as that member arrives; or one that failed to apply
    (``reason``), kept for a technician with an alert to HQ. ``inbound:<id>``: a message
    whose applying failed unexpectedly, tried again from time to time.
    """

    __tablename__ = "sync_set_aside"
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    topic: Mapped[str] = mapped_column(String(256), default="")
    hq_seq: Mapped[int | None] = mapped_column(Integer)
    waiting_for: Mapped[str | None] = mapped_column(String(26), index=True)
    reason: Mapped[str] = mapped_column(String(256), default="")
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    set_aside_at: Mapped[datetime] = mapped_column(UTCDateTime)
