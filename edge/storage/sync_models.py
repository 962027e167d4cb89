"""Tables of the sync agent: inbound messages already handled, and peripherals' health."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
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
