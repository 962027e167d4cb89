"""Publishing the outbox: in order, in batches, delivered only when HQ acknowledges.

A broker's PUBACK only says the broker took the message; Mosquitto may still drop it (queue
limits, a restart without a save). So every sent batch waits for HQ's application-level
:class:`~edge.protocol.EventAck`; a batch not acknowledged in time is sent again (go-back-N
from the oldest unacknowledged event) with a growing backoff. HQ deduplicates by event id, so
a resend is harmless, and an event leaves the outbox only with HQ's word that it is stored.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.protocol import EventAck, Topics
from edge.protocol.link import MqttLink
from edge.services.connectivity import record_hq_contact
from edge.services.personal import as_sent
from edge.storage.models import OutboxEvent

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    batch_id: str
    first_seq: int
    last_seq: int
    count: int
    sent_at: float


class OutboxPump:
    """Sends pending outbox rows and settles them on HQ's acks (runs on the agent's thread)."""

    def __init__(
        self,
        app: AppContext,
        link: MqttLink,
        topics: Topics,
        *,
        batch_max: int,
        inflight_max: int,
        ack_timeout_s: float,
        retry_max_s: float,
    ) -> None:
        self.app = app
        self.link = link
        self.topic = topics.events(app.device_id)
        self.batch_max = batch_max
        self.inflight_max = inflight_max
        self.ack_timeout_s = ack_timeout_s
        self.retry_max_s = retry_max_s
        self.timeout_s = ack_timeout_s
        self.inflight: OrderedDict[str, InFlight] = OrderedDict()
        self.cursor = 0  # last outbox seq sent in the current pass
        self.replay_to = 0  # HQ asked again for events up to here, delivered or not
        self.delivered = 0
        self.resends = 0
        self.last_ack_at: float | None = None

    def restart(self) -> None:
        """Start again from the oldest undelivered event (after a reconnect or a timeout)."""
        self.inflight.clear()
        self.cursor = 0
        self.replay_to = 0

    def pump(self) -> int:
        """Sends what the window allows; returns how many events were published."""
        now = time.monotonic()
        if self.inflight:
            oldest = next(iter(self.inflight.values()))
            if now - oldest.sent_at > self.timeout_s:
                log.info(
                    "no ack for events %d-%d in %.1f s: sending again",
                    oldest.first_seq,
                    oldest.last_seq,
                    self.timeout_s,
                )
                self.resends += 1
                self.timeout_s = min(self.timeout_s * 2, self.retry_max_s)
                self.restart()
        sent = 0
        while len(self.inflight) < self.inflight_max and self.link.connected:
            wanted: ColumnElement[bool]
            if self.replay_to > self.cursor:
                # HQ is missing these: send them whatever this device thought of them
                wanted = OutboxEvent.seq.between(self.cursor + 1, self.replay_to)
            else:
                wanted = OutboxEvent.delivered_at.is_(None) & (OutboxEvent.seq > self.cursor)
            with self.app.db.read() as session:
                rows = session.execute(
                    select(OutboxEvent.seq, OutboxEvent.payload)
                    .where(wanted)
                    .order_by(OutboxEvent.seq)
                    .limit(self.batch_max)
                ).all()
            if not rows:
                break
            batch_id = self.app.ids.new()
            # The stored payload is already the event's JSON: splice the seq in rather than
            # parsing and re-serialising a hundred thousand events.
            body = ",".join(
                f'{{"seq":{seq},{as_sent(self.app, payload)[1:]}' for seq, payload in rows
            )
            head = f'{{"v":1,"device_id":"{self.app.device_id}","batch_id":"{batch_id}"'
            message = f'{head},"events":[{body}]}}'.encode()
            if not self.link.publish(self.topic, message, qos=1):
                break
            first, last = rows[0][0], rows[-1][0]
            self.inflight[batch_id] = InFlight(batch_id, first, last, len(rows), now)
            self.cursor = last
            sent += len(rows)
            with self.app.db.write() as session:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.seq.between(first, last))
                    .values(attempts=OutboxEvent.attempts + 1)
                )
        return sent

    def _resend_from(self, seq: int) -> None:
        """HQ stores this device's events in order and needs ``seq`` next: go back to it now.

        Only an ack of a batch of the current pass does this (the pass then starts over), so
        the acks of batches sent before the rewind cannot make it rewind again and again.
        """
        if seq > self.cursor:
            return
        log.info("HQ needs events from %d on (sent up to %d): sending again", seq, self.cursor)
        self.replay_to = max(self.replay_to, self.cursor)
        self.inflight.clear()
        self.cursor = seq - 1
        self.resends += 1

    def on_ack(self, ack: EventAck) -> int:
        """Marks acknowledged events delivered (and HQ as heard from); returns how many."""
        ids = list(ack.event_ids) + [q.event_id for q in ack.quarantined]
        for q in ack.quarantined:
            log.error("HQ quarantined event %s: %s", q.event_id, q.reason)
        now = self.app.clock()
        sent = self.inflight.get(ack.batch_id) if ack.batch_id is not None else None
        with self.app.db.write() as session:
            pending = self._pending(session, ids, sent)
            if pending and pending[-1] - pending[0] + 1 == len(pending):
                # The whole run of seqs (an ordinary ack): one range, no list of values.
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.seq.between(pending[0], pending[-1]))
                    .values(delivered_at=now)
                    .execution_options(synchronize_session=False)
                )
            else:
                for start in range(0, len(pending), 500):
                    session.execute(
                        update(OutboxEvent)
                        .where(OutboxEvent.seq.in_(pending[start : start + 500]))
                        .values(delivered_at=now)
                        .execution_options(synchronize_session=False)
                    )
            record_hq_contact(session, now)
        if ack.batch_id is not None:
            self.inflight.pop(ack.batch_id, None)
            if sent is not None and ack.expect_seq is not None:
                self._resend_from(ack.expect_seq)
        self.delivered += len(pending)
        self.timeout_s = self.ack_timeout_s
        self.last_ack_at = time.monotonic()
        return len(pending)

    @staticmethod
    def _pending(session: Session, ids: list[str], sent: InFlight | None) -> list[int]:
        """The seqs, in order, of the events named ``ids`` not yet marked delivered.

        The ack of a batch still in flight names the events of its run of seqs: they are read
        by that range (the primary key), each checked against the ids. Any id not found there
        (an ack of an earlier pass, a batch this process did not send) is found by its unique
        id, 500 at a time. Asked in one statement for "these ids and not delivered yet",
        SQLite walks the pending index instead, a scan of the whole backlog for every ack.
        """
        found: dict[str, tuple[int, object]] = {}
        if sent is not None:
            for seq, event_id, delivered_at in session.execute(
                select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.delivered_at).where(
                    OutboxEvent.seq.between(sent.first_seq, sent.last_seq)
                )
            ).tuples():
                found[event_id] = (seq, delivered_at)
        missing = [i for i in ids if i not in found]
        for start in range(0, len(missing), 500):
            for seq, event_id, delivered_at in session.execute(
                select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.delivered_at).where(
                    OutboxEvent.event_id.in_(missing[start : start + 500])
                )
            ).tuples():
                found[event_id] = (seq, delivered_at)
        return sorted({found[i][0] for i in ids if i in found and found[i][1] is None})
