"""HQ's commands the agent has taken and not answered yet (``update`` downloads a bundle).

A command that runs on the agent's worker thread is written here, whole and signed, in the
transaction that takes it, before its MQTT message is acknowledged. Its result is recorded
in ``sync_inbound`` (``command:<transaction>``) when the work is done, and the row goes once
that result is handed to the link. A row found when the agent starts is a command a crash, a
power cut or a stop interrupted: it is run again from the start or answered, never forgotten.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from edge.storage.models import Base
from edge.storage.types import UTCDateTime


class RunningCommand(Base):
    """A command taken from HQ and not answered yet.

    ``payload`` is the signed command as it came (it is checked again before it runs again);
    ``reply_topic`` and ``correlation`` (base64, empty for none) are where its result goes;
    ``starts`` counts the times it was started, the first one included.
    """

    __tablename__ = "sync_command_running"
    transaction: Mapped[str] = mapped_column(String(64), primary_key=True)
    command: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    reply_topic: Mapped[str] = mapped_column(String(256))
    correlation: Mapped[str] = mapped_column(Text, default="")
    starts: Mapped[int] = mapped_column(Integer, default=1)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
