"""``kiosk agent``: the long-running sync service between the kiosk, its lanes and HQ.

One thread owns the database work (this module's loop); the MQTT link's network thread only
queues what arrives. Every inbound message is parsed against its schema, applied in one
transaction (or not at all) and only then acknowledged to the broker, so a crash at any point
means redelivery and an idempotent re-apply, never a loss or a double.

A command that waits on the network (``update`` downloads a bundle) runs on a worker thread:
it is stored as taken in the database before its message is acknowledged, and the loop
records and publishes the result when the work is done, pumping the outbox and pinging the
watchdog meanwhile. A result finished while the link is down is published once it is back;
a command a crash or a stop interrupted is run again (or answered) when the agent starts.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from edge import __version__
from edge.app import AppContext
from edge.domain.errors import DiskFull, KioskError
from edge.lifecycle.backup import BACKUP_DIR
from edge.protocol import (
    BackupAck,
    BlocklistUpdate,
    Campaigns,
    Catalogue,
    Command,
    CommandResult,
    CouponCheck,
    DeviceStatus,
    EventAck,
    LaneCard,
    LaneCards,
    LanePurchase,
    LaneRefund,
    MemberFetchResult,
    Message,
    PictureChunk,
    ProtocolError,
    ReplicaBatch,
    ReplicaRequest,
    Rules,
    StaffList,
    Topics,
    VoucherCheckResult,
    decode,
)
from edge.protocol.link import Inbound, LinkSettings, MqttLink, TlsFiles
from edge.services.cards import active_cards, lane_card_facts
from edge.services.connectivity import remember_first_start
from edge.services.pushes import (
    apply_blocklist,
    apply_campaigns,
    apply_catalogue,
    apply_rules,
    apply_staff_list,
    follow_stored_rules,
)
from edge.services.replica import apply_replica_batch, replica_cursor
from edge.services.tx import get_meta, set_meta, transaction
from edge.storage.sync_models import SetAside
from edge.sync.backup_transfer import BackupSender
from edge.sync.commands import CommandRunner, Taken, command_public_key
from edge.sync.coupon_ask import CouponAsker
from edge.sync.inbound import accrue_lane_purchase, check_coupon, refund_lane_purchase
from edge.sync.lane_cards import LocalCardChanges
from edge.sync.member_fetch import FetchServer, MemberFetcher
from edge.sync.outbox import OutboxPump
from edge.sync.pictures import PictureFetcher
from edge.sync.telemetry import collect
from edge.sync.voucher_check import VoucherChecker
from edge.systemd import sd_notify, watchdog_interval_s

log = logging.getLogger(__name__)

GAP_REQUEST_EVERY_S = 2.0
SET_ASIDE_RETRY_S = 300.0
PICTURES_EVERY_S = 60.0  # how often the agent looks for pictures its gifts lack
LANE_CARDS_EVERY_S = 1.0
LANE_CARDS_PER_MESSAGE = 500
LANE_PRICES_VERSION = "lanes.prices_rules_version"  # the rules whose member prices lanes have
# HQ acknowledges a backup once it holds the whole file: allow it this many event-ack timeouts.
BACKUP_ACK_TIMEOUT_FACTOR = 5
# While the disk is full: messages held unacknowledged, tried again this often; one log line
# about it at most this often.
HELD_RETRY_S = 5.0
DISK_FULL_LOG_EVERY_S = 60.0


def _path(app: AppContext, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else app.data_dir / path


def link_settings(app: AppContext, topics: Topics) -> LinkSettings:
    sync = app.config.sync

    def status(state: str) -> Callable[[], bytes]:
        return lambda: DeviceStatus(
            device_id=app.device_id,
            store_id=app.store_id,
            role="kiosk",
            state=state,
            at=app.clock(),
            version=__version__,
        ).to_bytes()

    me = app.device_id
    subs = [
        (topics.ack(me), 1),
        (topics.replica(me), 1),
        (topics.member(me), 1),
        (topics.voucher(me), 1),
        (topics.coupon_answer(me), 1),
        (topics.command(me), 1),
        (topics.backup_ack(me), 1),
        (topics.blocklist(), 1),
        (topics.catalogue(), 1),
        (topics.rules(), 1),
        (topics.staff(app.store_id), 1),
        (topics.campaigns(), 1),
    ]
    if sync.lane_purchases:
        subs += [
            (topics.all_lane_purchases(app.store_id), 1),
            (topics.all_lane_refunds(app.store_id), 1),
        ]
    subs += [(topics.all_lane_coupons(app.store_id), 1)]
    tls = None
    if sync.tls:
        tls = TlsFiles(
            _path(app, sync.ca_file), _path(app, sync.cert_file), _path(app, sync.key_file)
        )
    return LinkSettings(
        client_id=me,
        host=sync.broker_host,
        port=sync.broker_port,
        tls=tls,
        status_topic=topics.status(me),
        online_payload=status("online"),
        offline_payload=status("offline"),
        subscriptions=tuple(subs),
        keepalive_s=sync.keepalive_s,
        session_expiry_s=sync.session_expiry_s,
        reconnect_min_s=sync.reconnect_min_s,
        reconnect_max_s=sync.reconnect_max_s,
    )


@dataclass
class _RunningCommand:
    """A command on the worker thread, and where its result goes when it is done: to each
    (response topic, correlation data) that asked for its transaction.

    ``result`` is its recorded outcome once the worker is done (or at once, for one answered
    when the agent starts); the entry stays until the result is handed to the link for every
    asker (the link may be down just then)."""

    command: Command
    replies: list[tuple[str, bytes | None]]
    outcome: Future[tuple[str, dict[str, Any]]] | None
    result: CommandResult | None = None


class Agent:
    """Wires the outbox pump, the inbound appliers, telemetry and the watchdog to one link."""

    def __init__(self, app: AppContext, link: MqttLink | None = None) -> None:
        self.app = app
        self.topics = Topics(app.config.sync.topic_prefix)
        self.link = link or MqttLink(link_settings(app, self.topics))
        sync = app.config.sync
        self.pump = OutboxPump(
            app,
            self.link,
            self.topics,
            batch_max=sync.batch_max_events,
            inflight_max=sync.inflight_batches,
            ack_timeout_s=sync.ack_timeout_s,
            retry_max_s=sync.retry_max_s,
        )
        self.backups = BackupSender(
            self.link,
            self.topics,
            app.device_id,
            app.data_dir / BACKUP_DIR,
            ack_timeout_s=BACKUP_ACK_TIMEOUT_FACTOR * sync.ack_timeout_s,
        )
        self.commands = CommandRunner(app, command_public_key(app), self._resync)
        self._command_worker = ThreadPoolExecutor(1, thread_name_prefix="kiosk-command")
        # A coupon of HQ's is asked of HQ while the lane waits: never on the loop's thread.
        self._coupon_worker = ThreadPoolExecutor(2, thread_name_prefix="kiosk-coupon")
        self._running: dict[str, _RunningCommand] = {}
        self.clock_offset_s: float | None = None
        self.dropped = 0
        self.applied = 0
        self.failed = 0
        self._next_set_aside_retry = 0.0
        self._last_gap_request = 0.0
        self._next_telemetry = 0.0
        self.local_cards = LocalCardChanges(app)
        with app.db.read() as session:
            self._prices_told = get_meta(session, LANE_PRICES_VERSION) or ""
        self._next_lane_cards = 0.0
        # Messages that found the disk full: unacknowledged (the broker keeps them for a
        # restart), applied in arrival order once there is space, and only then acknowledged.
        # Each with the link's connection it came on: an acknowledgement is only for that one
        # (after a reconnect the broker sends it again if it kept the session).
        self._held: list[tuple[Inbound, int]] = []
        self._next_held_retry = 0.0
        self._disk_full_logged = 0.0
        self._stop = threading.Event()
        self.fetcher = MemberFetcher(app, self.link, self.topics, self._tell_lanes)
        self.vouchers = VoucherChecker(app, self.link, self.topics)
        self.coupons = CouponAsker(app, self.link, self.topics)
        self.fetch_server = FetchServer(app, self.fetcher, self.vouchers, self.coupons)
        self.pictures = PictureFetcher(app, self.link, self.topics)
        self._next_pictures = 0.0

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Runs until :meth:`stop` (SIGTERM) or ``until()``; says ``offline`` on the way out.

        A full disk stops nothing: each step that needs to write is skipped (and logged once a
        minute) until there is space again, while the link, the acknowledgements already
        applied and telemetry (which reports the full disk to HQ) go on.
        """
        self._step(self._remember_first_start)
        follow_stored_rules(self.app, 0)
        self._resume_commands()
        self.link.start()
        self.fetch_server.start()
        sd_notify("READY=1")
        watchdog = watchdog_interval_s()
        next_watchdog = 0.0
        try:
            while not self._stop.is_set() and not (until and until()):
                self._drain_inbox(0.05)
                self._step(self._finish_commands)
                self._step(self.pump.pump)
                self._step(self.backups.pump)
                now = time.monotonic()
                if self._held and now >= self._next_held_retry:
                    self._next_held_retry = now + HELD_RETRY_S
                    self._apply_held()
                if now >= self._next_lane_cards:
                    self._step(self._announce_local_cards)
                    if self.app.config.sync.lane_purchases:  # the store's lanes' kiosk
                        self._step(self._announce_member_prices)
                    self._next_lane_cards = now + LANE_CARDS_EVERY_S
                if now >= self._next_telemetry and self.link.connected:
                    self._publish_telemetry()
                    self._next_telemetry = now + self.app.config.sync.telemetry_interval_s
                if now - self._last_gap_request >= self.app.config.sync.replica_poll_s:
                    self._step(lambda: self._request_replica(force=True))
                if now >= self._next_set_aside_retry:
                    self._next_set_aside_retry = now + SET_ASIDE_RETRY_S
                    self._step(self._retry_set_aside)
                if now >= self._next_pictures:
                    self._next_pictures = now + PICTURES_EVERY_S
                    self._step(self.pictures.ask)
                if watchdog is not None and now >= next_watchdog:
                    sd_notify("WATCHDOG=1")
                    next_watchdog = now + watchdog
        finally:
            sd_notify("STOPPING=1")
            self.commands.stopping.set()
            self._command_worker.shutdown(wait=False, cancel_futures=True)
            self._coupon_worker.shutdown(wait=False, cancel_futures=True)
            self.fetch_server.close()
            self.link.close()

    def _resync(self) -> None:
        self.pump.restart()
        self._request_replica(force=True)

    def _remember_first_start(self) -> None:
        with transaction(self.app) as tx:
            remember_first_start(tx.session, tx.now)

    def _step(self, work: Callable[[], object]) -> None:
        """Runs one step of the loop; a full disk skips it (it is done again next time)."""
        try:
            work()
        except DiskFull as exc:
            self._log_disk_full(exc)

    def _log_disk_full(self, exc: DiskFull) -> None:
        now = time.monotonic()
        if now - self._disk_full_logged >= DISK_FULL_LOG_EVERY_S or not self._disk_full_logged:
            self._disk_full_logged = now
            log.error("%s; %d message(s) held until then", exc.message, len(self._held))

    # ------------------------------------------------------------------ inbound

    def _drain_inbox(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            timeout = deadline - time.monotonic()
            try:
                item = self.link.inbox.get(timeout=max(0.0, timeout))
            except queue.Empty:
                return
            if item == "connected":
                self.pump.restart()
                self.backups.restart()
                self.pictures.restart()
                self._request_replica(force=True)
                self._next_telemetry = 0.0
                self._next_pictures = 0.0
            elif isinstance(item, Inbound):
                if self._held:  # behind those already held, in arrival order
                    self._held.append((item, self.link.connects))
                else:
                    self.handle(item)
            if time.monotonic() >= deadline and self.link.inbox.empty():
                return

    def handle(self, msg: Inbound, connection: int | None = None) -> None:
        """Parses, applies and acknowledges one message; bad ones are logged and dropped.

        No message can stop the agent: one whose applying fails unexpectedly is set aside in
        the database (and tried again every ``SET_ASIDE_RETRY_S``) and acknowledged; only if
        even that cannot be written is it left unacknowledged, for the broker to redeliver.
        One that finds the disk full is held, unacknowledged, and applied once there is space.
        ``connection`` is the link's connection the message came on (the current one if None).
        """
        if connection is None:
            connection = self.link.connects
        try:
            self._dispatch(msg)
            self.applied += 1
        except ProtocolError as exc:
            self.dropped += 1
            log.warning("dropped message on %r: %s", msg.topic, exc)
        except DiskFull as exc:  # nothing was applied: held, to be applied when there is space
            self._held.append((msg, connection))
            self._log_disk_full(exc)
            return
        except KioskError as exc:
            self.dropped += 1
            log.warning("refused message on %r: %s", msg.topic, exc.message)
        except Exception as exc:  # a fault in one message must not take the loop down
            self.failed += 1
            log.exception("message on %r could not be applied: set aside", msg.topic)
            if not self._set_aside(msg, exc):
                return
        if connection == self.link.connects:
            self.link.ack(msg)

    def _apply_held(self) -> None:
        """Applies the messages held while the disk was full, in order, until one still
        finds it full."""
        held, self._held = self._held, []
        for n, (msg, connection) in enumerate(held):
            self.handle(msg, connection)
            if self._held:  # full again: it is held once more, the rest stay behind it
                self._held.extend(held[n + 1 :])
                return

    def _set_aside(self, msg: Inbound, exc: Exception) -> bool:
        """Keeps a message that failed to apply, to try again later; False if it cannot."""
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:256]
        try:
            with transaction(self.app) as tx:
                key = f"inbound:{tx.new_id()}"
                tx.session.add(
                    SetAside(
                        key=key,
                        topic=msg.topic[:256],
                        payload=base64.b64encode(msg.payload).decode(),
                        reason=reason,
                        attempts=1,
                        set_aside_at=tx.now,
                    )
                )
                tx.audit("agent", "sync.message_set_aside", key, topic=msg.topic, reason=reason)
                tx.emit(
                    "alert.device",
                    {"code": "message_set_aside", "detail": f"{msg.topic}: {reason}"[:256]},
                )
        except Exception:
            log.exception("message on %r could not be set aside either", msg.topic)
            return False
        return True

    def _retry_set_aside(self) -> None:
        """Applies again the messages set aside after a fault; keeps those that still fail."""
        with self.app.db.read() as session:
            kept = list(
                session.execute(
                    select(SetAside.key, SetAside.topic, SetAside.payload)
                    .where(SetAside.key.like("inbound:%"))
                    .order_by(SetAside.set_aside_at, SetAside.key)
                ).tuples()
            )
        for key, topic, payload in kept:
            msg = Inbound(topic, base64.b64decode(payload), qos=0, mid=0, retain=False)
            try:
                self._dispatch(msg)
                done = True
            except DiskFull:
                raise  # tried again once there is space, like every step of the loop
            except (ProtocolError, KioskError) as exc:
                log.warning("set-aside message %s dropped now: %s", key, exc)
                done = True
            except Exception as exc:
                log.warning("set-aside message %s still fails: %s", key, exc)
                done = False
            try:
                with transaction(self.app) as tx:
                    row = tx.session.get(SetAside, key)
                    if row is None:
                        continue
                    if done:
                        tx.session.delete(row)
                        tx.audit("agent", "sync.message_applied_later", key, topic=topic)
                    else:
                        row.attempts += 1
            except Exception:
                log.exception("set-aside message %s could not be updated", key)

    def _dispatch(self, msg: Inbound) -> None:
        t, me = self.topics, self.app.device_id
        topic = msg.topic
        if topic == t.ack(me):
            ack = decode(EventAck, msg.payload)
            received = self.app.clock()
            self.clock_offset_s = round((received - ack.at).total_seconds(), 3)
            self.pump.on_ack(ack)
        elif topic == t.backup_ack(me):
            answer = decode(BackupAck, msg.payload)
            if answer.device_id != me:
                raise ProtocolError(f"backup ack for {answer.device_id} on {me}'s topic")
            self.backups.on_ack(answer, self.app.clock())
        elif topic == t.replica(me):
            batch = decode(ReplicaBatch, msg.payload)
            if batch.feed != "store":
                # HQ has not heard yet that this kiosk follows its store's feed (the request
                # went out before HQ's workers subscribed, say): tell it again, at once. HQ
                # sends no more such batches once it has heard.
                self._request_replica(force=True)
                raise ProtocolError("a batch of the chain's feed; this kiosk follows its store's")
            outcome = apply_replica_batch(self.app, batch)
            if outcome.gap:
                self._request_replica()
            if outcome.cards:
                self._tell_lanes(outcome.cards)
        elif topic == t.member(me):
            # An answer that came after its request gave up waiting: applied all the same.
            self.fetcher.apply(decode(MemberFetchResult, msg.payload))
        elif topic == t.voucher(me):
            # An answer that came after its check gave up waiting: the desk went by its own
            # record then (a claim it carries is this kiosk's, and its gift.collected event
            # tells HQ the rest).
            late = decode(VoucherCheckResult, msg.payload)
            log.info("HQ's late answer about voucher %s: %s", late.voucher_id, late.state)
        elif topic == t.command(me):
            self._command(decode(Command, msg.payload), msg)
        elif topic == t.blocklist():
            update = decode(BlocklistUpdate, msg.payload)
            if msg.expiry_s is not None and msg.expiry_s <= 0:
                raise ProtocolError("blocklist update past its MQTT message expiry")
            pushed = apply_blocklist(self.app, update, self.app.clock())
            if pushed.cards:
                self._tell_lanes(list(pushed.cards))
        elif topic == t.catalogue():
            catalogue = decode(Catalogue, msg.payload)
            if apply_catalogue(self.app, catalogue, self.commands.public_key).applied:
                self._next_pictures = 0.0  # the pictures it names, now
        elif t.is_picture(topic):
            self.pictures.take(topic, decode(PictureChunk, msg.payload))
        elif topic == t.rules():
            apply_rules(self.app, decode(Rules, msg.payload), self.commands.public_key)
        elif topic == t.staff(self.app.store_id):
            apply_staff_list(self.app, decode(StaffList, msg.payload), self.commands.public_key)
        elif topic == t.campaigns():
            apply_campaigns(self.app, decode(Campaigns, msg.payload), self.commands.public_key)
        else:
            self._dispatch_lane(msg)

    def _command(self, command: Command, msg: Inbound) -> None:
        reply = msg.response_topic or self.topics.command_result(self.app.device_id)
        now = self.app.clock()
        if self.commands.runs_in_background(command):
            screened = self.commands.screen(command, now)
            if screened is None:
                running = self._running.get(command.transaction)
                if running is not None:
                    # a repeat while it runs: the one result goes to every asker when done
                    if (reply, msg.correlation) not in running.replies:
                        running.replies.append((reply, msg.correlation))
                    log.info("command %s is already running", command.transaction)
                    return
                # stored as taken before the message is acknowledged: a crash cannot lose it
                if self.commands.take(command, reply, msg.correlation):
                    self._start_command(Taken(command, reply, msg.correlation))
                    return
                screened = self.commands.screen(command, now)  # recorded meanwhile
                if screened is None:
                    log.warning("command %s is taken but not running", command.transaction)
                    return
            result = screened
        else:
            result = self.commands.handle(command, now)
        self.link.publish(reply, result.to_bytes(), qos=1, correlation=msg.correlation)

    def _start_command(self, taken: Taken, resumed: bool = False) -> None:
        outcome = self._command_worker.submit(self.commands.execute, taken.command, resumed)
        self._running[taken.command.transaction] = _RunningCommand(
            taken.command, [(taken.reply_topic, taken.correlation)], outcome
        )

    def _resume_commands(self) -> None:
        """Runs again, or answers, the commands taken and not answered before the last stop."""
        try:
            again, answered = self.commands.interrupted(self.app.clock())
        except Exception:  # the agent runs on; the commands stay taken for the next start
            log.exception("interrupted commands could not be read")
            return
        for taken, result in answered:
            self._running[taken.command.transaction] = _RunningCommand(
                taken.command, [(taken.reply_topic, taken.correlation)], None, result
            )
        for taken in again:
            self._start_command(taken, resumed=True)

    def _finish_commands(self) -> None:
        """Records the results of commands the worker has finished and publishes them; a
        result the link did not take (HQ's broker away) is published again next time round,
        and the command stays taken in the database until the link has taken it."""
        for transaction_id, running in list(self._running.items()):
            if running.result is None:
                if running.outcome is None or not running.outcome.done():
                    continue
                try:
                    status, detail = running.outcome.result()
                except Exception as exc:  # a fault in the worker must not take the loop down
                    log.exception("command %s failed", transaction_id)
                    status, detail = "failed", {"error": "internal", "message": str(exc)[:300]}
                running.result = self.commands.record(
                    running.command, status, detail, self.app.clock()
                )
            payload = running.result.to_bytes()
            running.replies = [
                (topic, correlation)
                for topic, correlation in running.replies
                if not self.link.publish(topic, payload, qos=1, correlation=correlation)
            ]
            if not running.replies:
                self.commands.answered(transaction_id)
                del self._running[transaction_id]

    def _dispatch_lane(self, msg: Inbound) -> None:
        parsed = self.topics.parse_lane_topic(msg.topic)
        if parsed is None or parsed[0] != self.app.store_id:
            raise ProtocolError(f"not a topic this agent handles: {msg.topic[:120]}")
        store, lane, leaf = parsed
        answer: Message
        if leaf == "purchase":
            purchase = decode(LanePurchase, msg.payload)
            self._own_lane(purchase.lane_id, lane)
            answer = accrue_lane_purchase(self.app, purchase)
            default = self.topics.lane_purchase_result(store, lane)
        elif leaf == "refund":
            refund = decode(LaneRefund, msg.payload)
            self._own_lane(refund.lane_id, lane)
            answer = refund_lane_purchase(self.app, refund)
            default = self.topics.lane_refund_result(store, lane)
        elif leaf == "coupon":
            check = decode(CouponCheck, msg.payload)
            self._own_lane(check.lane_id, lane)
            reply_to = msg.response_topic or self.topics.lane_coupon_result(store, lane)
            self._coupon_worker.submit(self._answer_coupon, check, reply_to, msg.correlation)
            return
        else:
            raise ProtocolError(f"unknown lane topic {msg.topic[:120]}")
        reply = msg.response_topic or default
        self.link.publish(reply, answer.to_bytes(), qos=1, correlation=msg.correlation)

    def _answer_coupon(self, check: CouponCheck, reply: str, correlation: bytes | None) -> None:
        """On the coupon worker: the kiosk's answer about a lane's coupon (a fault in it is
        logged, never raised into the pool where nobody would see it)."""
        try:
            answer = check_coupon(self.app, check)
            self.link.publish(reply, answer.to_bytes(), qos=1, correlation=correlation)
        except Exception:
            log.exception("a lane's coupon %s could not be answered", check.transaction)

    @staticmethod
    def _own_lane(named: str, lane: str) -> None:
        """A lane speaks for itself only: the message's lane id is its topic's."""
        if named != lane:
            raise ProtocolError(f"lane {named} published on lane {lane}'s topic")

    # ------------------------------------------------------------------ outbound

    def _request_replica(self, force: bool = False) -> None:
        if not self.link.connected:
            return
        now = time.monotonic()
        if not force and now - self._last_gap_request < GAP_REQUEST_EVERY_S:
            return
        self._last_gap_request = now
        with transaction(self.app) as tx:
            cursor = replica_cursor(tx, "store")
        request = ReplicaRequest(
            device_id=self.app.device_id,
            store_id=self.app.store_id,
            after_seq=cursor,
            feed="store",
            redemptions=True,
        )
        self.link.publish(self.topics.replica_request(self.app.device_id), request.to_bytes())

    def _tell_lanes(self, cards: list[tuple[str, str]]) -> bool:
        """Publishes the cards' states, with their members' tiers and member prices, for the
        store's lanes; False if the link refused it."""
        for start in range(0, len(cards), LANE_CARDS_PER_MESSAGE):
            chunk = lane_card_facts(self.app, cards[start : start + LANE_CARDS_PER_MESSAGE])
            message = LaneCards(
                cards=[
                    LaneCard(
                        card_no=f.card_no,
                        state=f.state,
                        tier=f.tier,
                        member_price_pct=f.member_price_pct,
                    )
                    for f in chunk
                ],
                at=self.app.clock(),
            )
            topic = self.topics.lane_cards(self.app.store_id)
            if not self.link.publish(topic, message.to_bytes()):
                return False
        return True

    def _announce_member_prices(self) -> None:
        """After HQ's rules put another tier ladder in force, every active card again, with
        the member price its tier now has (the version told is kept in the database)."""
        self.app.rules_due(self.app.clock())
        version = str(self.app.rules_version)
        if not self.link.connected or version == self._prices_told:
            return
        after = ""
        while cards := active_cards(self.app, after, LANE_CARDS_PER_MESSAGE):
            if not self._tell_lanes(cards):
                return  # the link went: again from the start next time
            after = cards[-1][0]
        with self.app.db.write() as session:
            set_meta(session, LANE_PRICES_VERSION, version)
        self._prices_told = version

    def _announce_local_cards(self) -> None:
        """Cards issued, replaced or blocked at this kiosk, to the lanes, HQ or no HQ."""
        if not self.link.connected:
            return
        cards, upto = self.local_cards.pending()
        if upto == self.local_cards.cursor:
            return
        if cards and not self._tell_lanes(cards):
            return
        self.local_cards.advance(upto, told=bool(cards))

    def _publish_telemetry(self) -> None:
        sample = collect(self.app, self.clock_offset_s)
        self.link.publish(
            self.topics.telemetry(self.app.device_id), sample.to_bytes(), qos=0, retain=True
        )
