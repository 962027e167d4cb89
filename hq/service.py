"""``kiosk hq serve``: the reference HQ service on MQTT.

Stores every device's events once, in each device's outbox order, and acknowledges them
(saying where to resend from when a batch arrives before the ones it follows); fans them out
to every other kiosk (numbered, so a kiosk can ask for what it missed), keeps the fleet's
status and telemetry, raises alerts, and publishes blocklist updates for blocked cards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, Table, create_engine, event, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edge import __version__
from edge.domain.errors import ConfigError, KioskError
from edge.protocol import (
    BackupChunk,
    BlocklistUpdate,
    Command,
    CommandResult,
    CouponAnswer,
    CouponAsk,
    DeviceStatus,
    Event,
    EventAck,
    EventBatch,
    MemberFetch,
    MemberFetchResult,
    MemberSnapshot,
    ProtocolError,
    Quarantined,
    ReplicaBatch,
    ReplicaEvent,
    ReplicaRequest,
    Telemetry,
    Topics,
    VoucherCheck,
    VoucherCheckResult,
    decode,
)
from edge.protocol.link import Inbound, LinkSettings, MqttLink, TlsFiles
from edge.security.keys import create_secret_file, load_secret
from edge.security.personal import PhoneVault, TextVault
from hq.backups import BackupStore
from hq.catalogue import BrokerPublisher, CatalogueDesk
from hq.contact_key import CONTACT_KEY_FILE, PhoneIntake, load_contact_key
from hq.coupons import answer as answer_coupon
from hq.enrol import LOOKUP_KEY_FILE
from hq.feeds import FeedNumbered, feed_chunk, release_unseen
from hq.feeds import fetch as fetch_member
from hq.fleet import DiskLow, apply_status, apply_telemetry, check_offline
from hq.ledger import (
    CentralLedger,
    Ingest,
    SequenceMoved,
    advance_seq,
    device_store,
    next_seq,
    raise_alert,
    stored_events,
)
from hq.models import FleetDevice
from hq.personal import DATA_KEY_FILE as HQ_DATA_KEY_FILE
from hq.reminders import MessageSettings
from hq.schema import require_current
from hq.vouchers import check_voucher

if TYPE_CHECKING:
    from hq.rollouts import StepReport, UpdateSigner

log = logging.getLogger(__name__)
T = TypeVar("T")

REPLICA_CHUNK = 1000
FLEET_CACHE_S = 5.0
GROUP_MAX = 32  # event batches stored in one transaction
READ_AHEAD = 2 * GROUP_MAX  # messages parsed ahead of the one being stored
SEEN_EVERY_S = 10.0
RELEASE_EVERY_S = 6 * 3600.0  # how often a worker ends the holdings of unseen members
RELEASE_CHUNK = 10_000  # holdings ended in one transaction
PUBLISH_EVERY_S = 60.0  # how often a worker looks for a catalogue or rules not yet published
RACE_RETRIES = 8
# PostgreSQL's serialization failure and deadlock victim: the transaction may simply run again.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def unreachable(exc: BaseException) -> bool:
    """Whether the database could not be reached (a restart, a lost connection, a locked
    SQLite file): nothing about the message is wrong, so it is neither stored nor set aside,
    and the device sends it again."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def lost_race(exc: BaseException) -> bool:
    """Whether a failed transaction lost a race with another writer (and may run again)."""
    if isinstance(exc, SequenceMoved | IntegrityError):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRY_SQLSTATES


class HqConfig(BaseModel):
    """How the HQ service connects and what it alerts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field("sqlite+pysqlite:///hq.db", title="SQLAlchemy URL of the ledger")
    broker_host: str = Field("127.0.0.1", title="Broker host")
    broker_port: int = Field(8883, ge=1, le=65535, title="Broker port")
    client_id: str = Field(
        "hq",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        title="MQTT client id (stable and different for each HQ worker: hq-1, hq-2 ...)",
    )
    share_group: str = Field(
        "hq",
        pattern=r"^[A-Za-z0-9_.-]{0,32}$",
        title="Shared-subscription group of HQ's workers ('' : every worker gets everything)",
    )
    ca_file: str = Field("", title="CA certificate (PEM)")
    cert_file: str = Field("", title="HQ's client certificate (CN hq)")
    key_file: str = Field("", title="HQ's client key")
    topic_prefix: str = Field("mck/v1", title="Topic prefix")
    command_key: str = Field("", title="HQ's Ed25519 command-signing key (PEM)")
    offline_alert_s: float = Field(300.0, gt=0, title="Alert when a device is offline this long")
    clone_window_min: float = Field(10.0, ge=0, title="Anti-cloning window in minutes")
    blocklist_ttl_s: int = Field(7 * 24 * 3600, ge=60, title="Lifetime of a blocklist update")
    backup_dir: str = Field(
        "", title="Where devices' backups are kept (default: backups/ beside HQ's database)"
    )
    backups_keep: int = Field(14, ge=1, le=1000, title="Backups kept per device")
    bundle_dir: str = Field(
        "", title="Where uploaded update bundles are kept (default: bundles/ beside HQ's database)"
    )
    bundle_base_url: str = Field(
        "",
        pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
        title="Where the devices fetch HQ's bundles: {bundle_base_url}/bundles/{sha256}.bundle",
        description="the web console serves them there; rollouts send no command without it",
    )
    update_key: str = Field(
        "",
        title="HQ's update key (hq-update.pub, or the private key) uploaded bundles must verify "
        "with (default: hq-update.pub in --tls-dir when it is there)",
    )
    disk_low_percent: float = Field(
        10.0, ge=0, le=100, title="Alert (disk_low) when a device's free space is under this %"
    )
    disk_low_mb: int = Field(
        200, ge=0, title="... or under this many MB (10**6 bytes), whichever is larger"
    )
    hold_months: int = Field(
        12,
        ge=1,
        le=120,
        title="A store holds a member of another store this many months after last seeing them",
        description="never less than the kiosks' sync.hold_months",
    )

    data_key_file: str = Field(
        "",
        title="HQ's data key (hq-data.key, from `kiosk hq data-key`)",
        description="seals the members' phone numbers, names and birthdays HQ keeps; required "
        "on PostgreSQL (default on SQLite: hq-data.key beside the database, made on first use)",
    )
    messages: MessageSettings = Field(
        default_factory=MessageSettings, title="Messages to members ([messages])"
    )

    contact_key_file: str = Field(
        "",
        title="HQ's contact key (hq-contact.pem, from `kiosk hq contact-key`)",
        description="opens the phone numbers kiosks seal for members who agree to messages "
        "(default: hq-contact.pem beside ca_file, when it is there)",
    )
    lookup_key_file: str = Field(
        "",
        title="The chain's phone-lookup key (hq-lookup.key)",
        description="checks a sealed phone number is the member's (default: hq-lookup.key "
        "beside ca_file, when it is there)",
    )

    def personal_vault(self) -> TextVault:
        """What seals and opens the members' personal data HQ keeps (its data key,
        :meth:`data_key`)."""
        return TextVault(self.data_key())

    def data_key(self) -> bytes:
        """HQ's data key, which seals the members' personal data HQ keeps.

        A trial on SQLite needs no setup: its key is made beside the database on first use
        (an in-memory database gets a key for the life of the process, as its data). A chain
        on PostgreSQL names its key: a key made by accident would seal new members with a key
        nobody backs up. A queued message's number is sealed with it too
        (:meth:`message_vault`).

        Raises:
            ConfigError: ``key_missing`` on PostgreSQL without ``data_key_file``, or the key
                file's own errors (unreadable, loose permissions, malformed).
        """
        if self.data_key_file:
            return load_secret(Path(self.data_key_file))
        for prefix in ("sqlite+pysqlite:///", "sqlite:///", "sqlite://"):
            if self.database_url.startswith(prefix):
                database = self.database_url.removeprefix(prefix)
                if not database or database.startswith(":memory:"):
                    return os.urandom(32)
                path = Path(database).parent / HQ_DATA_KEY_FILE
                create_secret_file(path)
                return load_secret(path)
        raise ConfigError(
            "HQ needs its data key to keep members' personal data: make it with "
            "`kiosk hq data-key --out DIR` and set data_key_file",
            code="key_missing",
        )

    def message_vault(self) -> PhoneVault:
        """What seals and opens the numbers of queued messages (HQ's data key). Only its data
        key is used: finding a member by phone takes the chain's lookup key, not needed here.

        Raises:
            ConfigError: as :meth:`personal_vault`.
        """
        return PhoneVault(self.data_key(), os.urandom(32))

    def _beside_ca(self, configured: str, name: str) -> Path | None:
        if configured:
            return Path(configured)
        if self.ca_file:
            return Path(self.ca_file).parent / name
        return None

    def phone_intake(self) -> PhoneIntake:
        """What opens the phone numbers kiosks seal for HQ (see :class:`PhoneIntake`): the
        contact key and the lookup key, each when configured or found beside ``ca_file``.

        Raises:
            ConfigError: a key file that is there (or configured) is unusable.
        """
        contact_path = self._beside_ca(self.contact_key_file, CONTACT_KEY_FILE)
        lookup_path = self._beside_ca(self.lookup_key_file, LOOKUP_KEY_FILE)
        if self.contact_key_file and contact_path is not None and not contact_path.exists():
            raise ConfigError(f"no contact key at {contact_path}", code="key_missing")
        contact = load_contact_key(contact_path) if contact_path is not None else None
        vault = None
        if contact is not None and lookup_path is not None and lookup_path.exists():
            vault = PhoneVault(self.data_key(), load_secret(lookup_path))
        return PhoneIntake(contact, vault)

    def tls(self) -> TlsFiles | None:
        if not self.ca_file:
            return None
        return TlsFiles(Path(self.ca_file), Path(self.cert_file), Path(self.key_file))

    def backups_path(self) -> Path:
        """``backup_dir``, or ``backups/`` beside a SQLite database (else the working dir)."""
        return Path(self.backup_dir) if self.backup_dir else self._beside_database("backups")

    def bundles_path(self) -> Path:
        """``bundle_dir``, or ``bundles/`` beside a SQLite database (else the working dir)."""
        return Path(self.bundle_dir) if self.bundle_dir else self._beside_database("bundles")

    def _beside_database(self, name: str) -> Path:
        for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
            if self.database_url.startswith(prefix):
                database = self.database_url.removeprefix(prefix)
                if database and not database.startswith(":memory:"):
                    return Path(database).parent / name
        return Path(name)


def make_hq_engine(url: str) -> Engine:
    """An engine for HQ's database; it creates nothing (``kiosk hq db upgrade`` does)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: object, _record: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            # a checkpoint (which flushes the database file) every 64 MB of log, not 4 MB:
            # a backlog's large transactions would each set one off
            cur.execute("PRAGMA wal_autocheckpoint = 16384")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def open_hq_engine(url: str) -> Engine:
    """An engine for HQ's database, refused in one line unless its schema is the one this
    build expects."""
    engine = make_hq_engine(url)
    try:
        require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def hq_link(
    config: HqConfig,
    client_id: str,
    subscriptions: tuple[tuple[str, int], ...],
    clean_start: bool = False,
    session_expiry_s: int = LinkSettings.session_expiry_s,
) -> MqttLink:
    topics = Topics(config.topic_prefix)

    def status(state: str) -> Callable[[], bytes]:
        return lambda: DeviceStatus(
            device_id=client_id,
            store_id="hq",
            role="hq",
            state=state,
            at=datetime.now(UTC),
            version=__version__,
        ).to_bytes()

    return MqttLink(
        LinkSettings(
            client_id=client_id,
            host=config.broker_host,
            port=config.broker_port,
            tls=config.tls(),
            status_topic=topics.status(client_id),
            online_payload=status("online"),
            offline_payload=status("offline"),
            subscriptions=subscriptions,
            clean_start=clean_start,
            session_expiry_s=session_expiry_s,
            reconnect_min_s=0.2,
            reconnect_max_s=5.0,
        )
    )


@dataclass(frozen=True)
class Arrived:
    """A message off the link, an event batch already parsed (:meth:`HqService.arrive`)."""

    msg: Inbound
    batch: EventBatch | None = None


@dataclass
class Counters:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    dropped: int = 0
    handled: int = 0
    replica_requests: int = 0
    gaps: int = 0
    failed: int = 0
    races: int = 0  # transactions run again after another writer got in first
    fetches: int = 0
    voucher_checks: int = 0
    coupon_asks: int = 0


class HqService:
    """The HQ loop: one thread applies messages in order; the link thread queues them and a
    reading thread parses event batches a few messages ahead."""

    def __init__(self, config: HqConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)
        if engine is None:
            engine = open_hq_engine(config.database_url)
        else:
            require_current(engine)
        self.engine = engine
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.vault = config.personal_vault()
        self.ledger = CentralLedger(
            timedelta(minutes=config.clone_window_min), self.vault, config.phone_intake()
        )
        t = self.topics
        # The devices' traffic is shared among HQ's workers: each message goes to one.
        leaves = (
            ("events", 1),
            ("replica/request", 1),
            ("status", 1),
            ("telemetry", 0),
            ("command/result", 1),
            ("backup", 1),
        )
        # A worker in a group keeps no session when it is gone: the broker would go on handing
        # a dead worker's session its share of the messages. Nothing is lost: the devices send
        # again what HQ did not acknowledge, whichever worker takes it.
        shared = bool(config.share_group)
        self.link = hq_link(
            config,
            config.client_id,
            tuple((t.shared(config.share_group, t.every_device(leaf)), q) for leaf, q in leaves),
            clean_start=shared,
            session_expiry_s=0 if shared else LinkSettings.session_expiry_s,
        )
        # A kiosk waits for a member it fetches while a customer stands there: the requests
        # come on a connection and a thread of their own, never behind a backlog of events.
        self.fetch_link = hq_link(
            config,
            f"{config.client_id}-fetch",
            tuple(
                (t.shared(config.share_group, t.every_device(leaf)), 1)
                for leaf in ("member/request", "voucher/request", "coupon/request")
            ),
            clean_start=shared,
            session_expiry_s=0 if shared else LinkSettings.session_expiry_s,
        )
        self.backups = BackupStore(config.backups_path(), config.backups_keep)
        self.counters = Counters()
        self._counting = threading.Lock()
        self._fleet: tuple[float, list[tuple[str, str, str]]] = (-FLEET_CACHE_S, [])
        self._readers: set[str] = set()  # kiosks that read a snapshot's redemptions
        self._seen_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._next_check = 0.0
        self._next_release = time.monotonic() + 60.0  # not in the way of a start
        self._next_publish = 0.0  # as soon as the link is up
        self._said_no_key = False
        self._rollout_unsent = ""

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        self.link.start()
        self.fetch_link.start()
        done = threading.Event()
        arrived: queue.Queue[Arrived] = queue.Queue(READ_AHEAD)
        helpers = [
            threading.Thread(target=self._serve_fetches, args=(done,), name="hq-fetch"),
            threading.Thread(target=self._read, args=(arrived, done), name="hq-read"),
        ]
        for helper in helpers:
            helper.daemon = True
            helper.start()
        try:
            while not self._stop.is_set() and not (until and until()):
                try:
                    item = arrived.get(timeout=0.2)
                except queue.Empty:
                    pass
                else:
                    self._take(item, arrived)
                now = time.monotonic()
                if now >= self._next_check:
                    self._next_check = now + 5.0
                    try:
                        self.in_transaction(self._check_offline)
                    except SQLAlchemyError:
                        log.exception("the offline check failed: trying again in 5 s")
                    try:
                        self.step_rollouts()
                    except Exception:  # never a reason to stop serving the devices
                        log.exception("the rollouts' step failed: trying again in 5 s")
                if now >= self._next_release:
                    self._next_release = now + RELEASE_EVERY_S
                    self.release_holdings()
                if now >= self._next_publish and self.link.connected:
                    self._next_publish = now + PUBLISH_EVERY_S
                    self.publish_pending()
        finally:
            done.set()
            for helper in helpers:
                helper.join(5)
            self.fetch_link.close()
            self.link.close()

    def publish_pending(self) -> None:
        """Publishes HQ's newest catalogue and rules if the broker has not taken them (an
        edit saved while it was unreachable): on start, then every minute, one query each
        when there is nothing to send. Every worker may do it: they are retained, and a
        kiosk applies a version once."""
        try:
            desk = CatalogueDesk(self.engine, BrokerPublisher(self.config))
            done = desk.publish_pending()
        except ConfigError as exc:
            if not self._said_no_key:
                self._said_no_key = True
                log.warning("the catalogue and rules are not published from here: %s", exc)
            return
        except (KioskError, SQLAlchemyError):
            log.exception("publishing the catalogue and rules failed: trying again later")
            return
        for publication in done:
            if publication.published:
                log.info("%s v%d published", publication.kind, publication.version)
            else:
                log.warning(
                    "%s v%d not published: %s",
                    publication.kind,
                    publication.version,
                    publication.problem,
                )

    def release_holdings(self, now: datetime | None = None) -> int:
        """Ends the holdings of members not seen at a store for ``hold_months``
        (:func:`~hq.feeds.release_unseen`), in chunks; returns how many ended."""
        months = self.config.hold_months

        def release(session: Session) -> int:
            return release_unseen(session, now or datetime.now(UTC), months, RELEASE_CHUNK)

        ended = 0
        while not self._stop.is_set():
            try:
                done = self.in_transaction(release)
            except SQLAlchemyError:
                log.exception("releasing unseen members failed: trying again later")
                break
            ended += done
            if done == 0:
                break
        if ended:
            log.info("%d holdings of members unseen for %d months ended", ended, months)
        return ended

    def arrive(self, msg: Inbound) -> Arrived:
        """``msg``, an event batch parsed with each event's data checked: the reading thread
        does this for the next messages while the loop stores the batches before them. A
        batch that does not parse is left for :meth:`handle` to drop, with its reason."""
        parsed = self.topics.parse_device_topic(msg.topic)
        if parsed is None or parsed[1] != "events":
            return Arrived(msg)
        try:
            batch = decode(EventBatch, msg.payload)
        except ProtocolError:
            return Arrived(msg)
        for one in batch.events:
            # Worked out now and kept on the event: its data checked (the ledger sets aside
            # one that fails) and the JSON HQ stores.
            one.stored_json  # noqa: B018
            with contextlib.suppress(ProtocolError):
                one.typed_data  # noqa: B018
        return Arrived(msg, batch)

    def _read(self, arrived: queue.Queue[Arrived], done: threading.Event) -> None:
        """The reading thread: parses what the link received, a few messages ahead."""
        while not done.is_set():
            try:
                item = self.link.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if not isinstance(item, Inbound):
                continue
            try:
                ready = self.arrive(item)
            except Exception:  # the loop's handle() deals with it, and logs why
                ready = Arrived(item)
            while not done.is_set():
                try:
                    arrived.put(ready, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _take(self, item: Arrived, arrived: queue.Queue[Arrived]) -> None:
        """Handles ``item``; with event batches of several devices waiting behind it, stores
        them together (:meth:`handle_events`), in the order they came."""
        if item.batch is None:
            self.handle(item.msg)
            return
        group, after = [item], None
        while len(group) < GROUP_MAX:
            try:
                waiting = arrived.get_nowait()
            except queue.Empty:
                break
            if waiting.batch is None:
                after = waiting
                break
            group.append(waiting)
        if len(group) == 1:
            self.handle(item.msg, batch=item.batch)
        else:
            self.handle_events(group)
        if after is not None:
            self.handle(after.msg)

    def _serve_fetches(self, done: threading.Event) -> None:
        while not done.is_set():
            try:
                item = self.fetch_link.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Inbound):
                self.handle(item, self.fetch_link)

    def step_rollouts(self, now: datetime | None = None) -> StepReport:
        """One step of the update rollouts (:func:`hq.rollouts.step`), their commands sent on
        this worker's link; every worker runs it, the rollouts' locks keep them apart."""
        from hq.rollouts import step  # hq.rollouts reads this module's config

        signer = self._rollout_signer
        report = self.in_transaction(
            lambda session: step(session, now or datetime.now(UTC), self._send_command, signer)
        )
        if report.unsent and report.unsent != self._rollout_unsent:
            log.warning("rollout commands not sent: %s", report.unsent)
        self._rollout_unsent = report.unsent
        for rollout_id in report.halted:
            log.warning("rollout %d halted itself: too many kiosks failed", rollout_id)
        return report

    @cached_property
    def _rollout_signer(self) -> UpdateSigner | None:
        """What signs the rollouts' update commands; None without HQ's command key or
        ``bundle_base_url`` (the rollouts then wait, and say so in the log)."""
        from hq.rollouts import signer_for

        try:
            return signer_for(self.config)
        except ConfigError:
            return None

    def _send_command(self, command: Command) -> None:
        if not publish_command(self.link, self.topics, command):
            raise ConnectionError("HQ's link to the broker is down")

    def _check_offline(self, session: Session) -> list[str]:
        threshold = timedelta(seconds=self.config.offline_alert_s)
        return check_offline(session, datetime.now(UTC), threshold)

    def handle(
        self, msg: Inbound, link: MqttLink | None = None, batch: EventBatch | None = None
    ) -> None:
        """Applies one message; malformed ones are logged and dropped, never half-applied.

        Nothing a message holds can stop the service: a fault while applying one is logged
        and counted, and the message is acknowledged to the broker only if it was dealt with
        (a device resends its events until HQ's own acknowledgement says they are stored).
        ``batch`` is the message's event batch where :meth:`arrive` parsed it already.
        """
        outcome = "handled"
        try:
            self._dispatch(msg, batch)
        except ProtocolError as exc:
            outcome = "dropped"
            log.warning("dropped message on %r: %s", msg.topic[:120], exc)
        except SQLAlchemyError as exc:
            outcome = "failed"
            if unreachable(exc):
                log.error("HQ's database cannot be reached: %s", str(exc).splitlines()[0])
                self._stop.wait(0.5)  # the devices send again; no need to spin meanwhile
            else:
                log.exception("message on %r could not be handled", msg.topic[:120])
        except Exception:
            outcome = "failed"
            log.exception("message on %r could not be handled", msg.topic[:120])
        with self._counting:  # two threads handle messages (events, and member fetches)
            if outcome != "handled":
                setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
            self.counters.handled += 1
        (link or self.link).ack(msg)

    def _dispatch(self, msg: Inbound, batch: EventBatch | None = None) -> None:
        parsed = self.topics.parse_device_topic(msg.topic)
        if parsed is None:
            raise ProtocolError(f"unexpected topic {msg.topic[:120]}")
        device_id, leaf = parsed
        now = datetime.now(UTC)
        if leaf == "events":
            self._ingest(device_id, batch or decode(EventBatch, msg.payload), now)
        elif leaf == "replica/request":
            request = decode(ReplicaRequest, msg.payload)
            if request.device_id != device_id:
                raise ProtocolError(f"{device_id} asked for {request.device_id}'s replica")
            self._serve_replica(request, now)
        elif leaf == "member/request":
            self._fetch_member(device_id, msg, decode(MemberFetch, msg.payload), now)
        elif leaf == "voucher/request":
            self._check_voucher(device_id, msg, decode(VoucherCheck, msg.payload), now)
        elif leaf == "coupon/request":
            self._answer_coupon(device_id, msg, decode(CouponAsk, msg.payload), now)
        elif leaf == "status":
            if not msg.payload:
                return  # a retained status being cleared
            status = decode(DeviceStatus, msg.payload)
            if status.device_id != device_id:
                raise ProtocolError(f"status of {status.device_id} on {device_id}'s topic")
            self.in_transaction(lambda session: apply_status(session, status, now))
        elif leaf == "telemetry":
            if not msg.payload:
                return
            sample = decode(Telemetry, msg.payload)
            if sample.device_id != device_id:
                raise ProtocolError(f"telemetry of {sample.device_id} on {device_id}'s topic")
            disk_low = DiskLow(self.config.disk_low_percent, self.config.disk_low_mb)
            self.in_transaction(lambda session: apply_telemetry(session, sample, now, disk_low))
        elif leaf == "command/result":
            log.info("command result from %s: %s", device_id, msg.payload[:300])
            if not msg.payload:
                return
            result = decode(CommandResult, msg.payload)
            if result.device_id != device_id:
                raise ProtocolError(f"result of {result.device_id} on {device_id}'s topic")
            from hq.rollouts import record_result  # hq.rollouts reads this module's config

            self.in_transaction(lambda session: record_result(session, result, now))
        elif leaf == "backup":
            self._backup(device_id, decode(BackupChunk, msg.payload), now)
        else:
            raise ProtocolError(f"unexpected device topic {msg.topic[:120]}")

    def _ingest(self, device_id: str, batch: EventBatch, now: datetime) -> None:
        try:
            result = self.store_batch(device_id, batch, now)
        except SQLAlchemyError as exc:
            if unreachable(exc):
                raise  # nothing stored or acknowledged: the device sends the batch again
            # One event HQ cannot apply must not hold up the device's others: store them one
            # by one, and set aside (quarantine, with an alert) the one that fails alone.
            log.exception(
                "batch %s of %s failed: storing it event by event", batch.batch_id, device_id
            )
            result = self._store_one_by_one(device_id, batch, now)
        self._answer(device_id, batch, result, now)

    def _answer(self, device_id: str, batch: EventBatch, result: Ingest, now: datetime) -> None:
        """After the commit: the device's acknowledgement, the stores' feeds, the blocklist."""
        with self._counting:
            self.counters.batches += 1
            self.counters.stored += len(result.stored)
            self.counters.duplicates += len(result.acked) - len(result.stored)
            if result.gap:
                self.counters.gaps += 1
        ack = EventAck(
            batch_id=batch.batch_id,
            event_ids=result.acked,
            quarantined=[Quarantined(event_id=i, reason=r) for i, r in result.quarantined],
            expect_seq=result.expect_seq,
            at=now,
        )
        self.link.publish(self.topics.ack(device_id), ack.to_bytes(), qos=1)
        if result.stored:
            self._fan_out(result)
        if result.blocked_cards:
            self._publish_blocklist(result, now)

    def store_batch(self, device_id: str, batch: EventBatch, now: datetime) -> Ingest:
        """One transaction for the batch, run again when another writer got in first.

        Several HQ workers share the devices' traffic: another may have moved the device's
        seq, stored the same event, opened the same alert or first seen the same member or
        card (a unique constraint refuses the second), or PostgreSQL may have chosen this
        transaction as a deadlock's victim. Each is a race, not a fault: the batch is read
        again and finds what the other writer stored.
        """

        return self.in_transaction(lambda session: self._store(session, device_id, batch, now))

    def _store(
        self,
        session: Session,
        device_id: str,
        batch: EventBatch,
        now: datetime,
    ) -> Ingest:
        return self._store_many(session, [(device_id, batch)], now)[0]

    def _store_many(
        self,
        session: Session,
        batches: list[tuple[str, EventBatch]],
        now: datetime,
    ) -> list[Ingest]:
        results = self.ledger.ingest_many(session, batches, now)
        # A device's last_seen moves at most every SEEN_EVERY_S: its telemetry and status keep
        # the fleet's view; this only saves a write per batch.
        tick = time.monotonic()
        due = {
            device_id: batch.events[0].store_id
            for device_id, batch in batches
            if batch.events and tick - self._seen_at.get(device_id, -SEEN_EVERY_S) >= SEEN_EVERY_S
        }
        if due:
            self._seen(session, due, now)
            self._seen_at.update(dict.fromkeys(due, tick))
        return results

    def handle_events(self, group: list[Arrived]) -> None:
        """Batches waiting together (:meth:`arrive`; several devices', or a device's next
        ones), stored in one transaction (one commit for all), then each acknowledged.
        Anything but a clean run of the group (a lost race, a batch HQ cannot apply) falls
        back to storing each on its own, as :meth:`handle` does, so the group changes nothing
        but the number of commits."""
        now = datetime.now(UTC)
        parsed: list[tuple[Inbound, str, EventBatch]] = []
        for item in group:
            topic = self.topics.parse_device_topic(item.msg.topic)
            if item.batch is None or topic is None:
                self.handle(item.msg)  # dropped there, with its reason
            else:
                parsed.append((item.msg, topic[0], item.batch))
        if len(parsed) < 2:
            for msg, _, batch in parsed:
                self.handle(msg, batch=batch)
            return

        try:
            results = self.store_batches(
                [(device_id, batch) for _, device_id, batch in parsed], now
            )
        except (SequenceMoved, SQLAlchemyError) as exc:
            if isinstance(exc, SQLAlchemyError) and unreachable(exc):
                log.error("HQ's database cannot be reached: %s", str(exc).splitlines()[0])
                with self._counting:
                    self.counters.failed += len(parsed)
                    self.counters.handled += len(parsed)
                for msg, _, _ in parsed:
                    self.link.ack(msg)  # the devices send them again
                self._stop.wait(0.5)
                return
            for msg, _, batch in parsed:
                self.handle(msg, batch=batch)
            return
        for (msg, device_id, batch), result in zip(parsed, results, strict=True):
            self._answer(device_id, batch, result, now)
            with self._counting:
                self.counters.handled += 1
            self.link.ack(msg)

    def store_batches(self, batches: list[tuple[str, EventBatch]], now: datetime) -> list[Ingest]:
        """Several batches stored in one transaction, with the same statements for all of them
        (:meth:`~hq.ledger.CentralLedger.ingest_many`), a device's in the order they came. A
        lost race raises: the caller stores them one by one."""
        with self.sessions() as session, session.begin():
            return self._store_many(session, batches, now)

    def in_transaction(self, work: Callable[[Session], T]) -> T:
        """Runs ``work`` in one transaction, again (up to ``RACE_RETRIES`` times) when it lost
        a race with another HQ worker (:func:`lost_race`); other faults are raised."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.sessions() as session, session.begin():
                    return work(session)
            except (SequenceMoved, SQLAlchemyError) as exc:
                if attempt == RACE_RETRIES or not lost_race(exc):
                    raise
                with self._counting:
                    self.counters.races += 1
                time.sleep(random.uniform(0, 0.005 * attempt))

    def _store_one_by_one(self, device_id: str, batch: EventBatch, now: datetime) -> Ingest:
        total = Ingest()
        for one in sorted(batch.events, key=lambda e: e.seq):
            single = EventBatch(device_id=batch.device_id, batch_id=batch.batch_id, events=[one])
            try:
                part = self.store_batch(device_id, single, now)
            except (SQLAlchemyError, SequenceMoved) as exc:
                if unreachable(exc):
                    raise
                log.exception("event %s of %s cannot be applied", one.event_id, device_id)
                part = self._set_aside(device_id, one, f"HQ could not apply it: {exc}", now)
            total.acked += part.acked
            total.quarantined += part.quarantined
            total.stored += part.stored
            total.blocked_cards += part.blocked_cards
            total.alerts += part.alerts
            total.expect_seq = part.expect_seq
            for store_id, items in part.feed.items():
                total.feed.setdefault(store_id, []).extend(items)
            if part.gap:
                total.gap = True
                break
        return total

    def _set_aside(self, device_id: str, event: Event, reason: str, now: datetime) -> Ingest:
        """Quarantines an event that fails to apply, taking its seq if it is the next one."""

        def set_aside(session: Session) -> Ingest:
            result = Ingest()
            expected = next_seq(session, device_id)
            if event.seq > expected:
                result.gap, result.expect_seq = True, expected
                return result
            self.ledger.quarantine(session, event, device_id, reason, now, result)
            raise_alert(
                session,
                "event_not_applied",
                event.event_id,
                f"event {event.event_id} ({event.kind}) of {device_id}: {reason}"[:1000],
                now,
                event.store_id,
                device_id,
            )
            if event.seq == expected:
                advance_seq(session, device_id, expected, expected + 1, now)
            return result

        return self.in_transaction(set_aside)

    def _backup(self, device_id: str, chunk: BackupChunk, now: datetime) -> None:
        if chunk.device_id != device_id:
            raise ProtocolError(f"backup of {chunk.device_id} on {device_id}'s topic")
        with self.sessions() as session:
            device = session.get(FleetDevice, device_id)
            if device is not None and device.store_id != chunk.manifest.store_id:
                raise ProtocolError(
                    f"{device_id} of store {device.store_id} sent a backup of store "
                    f"{chunk.manifest.store_id}"
                )
        try:
            ack = self.backups.receive(chunk, now)
        except OSError as exc:
            log.error("backup chunk of %s could not be written: %s", device_id, exc)
            ack = BackupStore.refusal(chunk, "HQ could not store it", now)
        if ack is not None:
            if ack.ok:  # what the fleet page shows as the device's last backup at HQ
                made = chunk.manifest.created_at

                def note(session: Session) -> None:
                    session.execute(
                        update(FleetDevice)
                        .where(
                            FleetDevice.device_id == device_id,
                            (FleetDevice.last_backup_at.is_(None))
                            | (FleetDevice.last_backup_at < made),
                        )
                        .values(last_backup_at=made)
                    )

                self.in_transaction(note)
            self.link.publish(self.topics.backup_ack(device_id), ack.to_bytes(), qos=1)

    @staticmethod
    def _seen(session: Session, stores: dict[str, str], now: datetime) -> None:
        """Moves ``last_seen`` of the devices (``{device: store}``); a device never seen
        before is added to the fleet as a kiosk."""
        conn = session.connection()
        table = cast(Table, FleetDevice.__table__)
        listed = sorted(stores)
        seen = set(
            conn.execute(
                update(table)
                .where(table.c.device_id.in_(listed))
                .values(last_seen=now)
                .returning(table.c.device_id)
            ).scalars()
        )
        new = [d for d in listed if d not in seen]
        if new:
            conn.execute(
                insert(table),
                [
                    {
                        "device_id": d,
                        "store_id": stores[d],
                        "role": "kiosk",
                        "state": "online",
                        "state_since": now,
                        "last_seen": now,
                    }
                    for d in new
                ],
            )

    def _kiosks(self, stores: set[str]) -> list[tuple[str, str, str]]:
        """(device, store, feed) of the kiosks that follow the whole chain (protocol 1.0) or
        one of ``stores``' feeds.

        The fleet is read at most every ``FLEET_CACHE_S``: a kiosk this worker does not know
        follows its store's feed yet misses the items published meanwhile, sees the gap at the
        next batch and asks for them.
        """
        tick = time.monotonic()
        read_at, fleet = self._fleet
        if tick - read_at >= FLEET_CACHE_S:
            with self.sessions() as session:
                rows = session.execute(
                    select(
                        FleetDevice.device_id,
                        FleetDevice.store_id,
                        FleetDevice.replica_feed,
                        FleetDevice.reads_redemptions,
                    ).where(FleetDevice.role == "kiosk")
                ).tuples()
                fleet = []
                readers = set()
                for device_id, store_id, feed, reads in rows:
                    fleet.append((device_id, store_id, feed))
                    if reads:
                        readers.add(device_id)
            self._fleet, self._readers = (tick, fleet), readers
        return [k for k in fleet if k[2] == "chain" or k[1] in stores]

    def _fan_out(self, result: Ingest) -> None:
        """Each store's kiosks get the items their store's feed gained; a kiosk of protocol
        1.0 gets every new event of the chain, one batch per run of consecutive chain numbers
        (events stored one by one may have others' between them). A kiosk's own events are
        left out of its copy (the numbers they took are covered all the same)."""
        runs: list[list[tuple[int, Event]]] = []
        for seq, ev in result.stored:
            if runs and runs[-1][-1][0] + 1 == seq:
                runs[-1].append((seq, ev))
            else:
                runs.append([(seq, ev)])
        events = dict(result.stored)
        now = datetime.now(UTC)
        for device_id, store_id, feed in self._kiosks(set(result.feed)):
            if feed == "store":
                items = result.feed.get(store_id)
                if items:
                    self._publish_feed(device_id, items, events, now)
                continue
            for run in runs:
                batch = ReplicaBatch(
                    after_seq=run[0][0] - 1,
                    to_seq=run[-1][0],
                    events=[
                        ReplicaEvent(hq_seq=seq, event=ev)
                        for seq, ev in run
                        if ev.device_id != device_id
                    ],
                    at=now,
                )
                self.link.publish(self.topics.replica(device_id), batch.to_bytes(), qos=1)

    def _publish_feed(
        self,
        device_id: str,
        items: list[FeedNumbered],
        events: dict[int, Event],
        now: datetime,
        members: dict[str, MemberSnapshot] | None = None,
    ) -> None:
        """New items of the device's store feed, one batch per run of consecutive numbers."""
        runs: list[list[FeedNumbered]] = []
        for item in items:
            if runs and runs[-1][-1][0] + 1 == item[0]:
                runs[-1].append(item)
            else:
                runs.append([item])
        for run in runs:
            listed: list[ReplicaEvent] = []
            for feed_seq, hq_seq, member_id in run:
                if hq_seq is not None and hq_seq in events:
                    if events[hq_seq].device_id != device_id:
                        listed.append(ReplicaEvent(hq_seq=feed_seq, event=events[hq_seq]))
                elif member_id is not None and members and member_id in members:
                    snap = members[member_id].for_reader(device_id in self._readers)
                    listed.append(ReplicaEvent(hq_seq=feed_seq, member=snap))
            batch = ReplicaBatch(
                after_seq=run[0][0] - 1, to_seq=run[-1][0], events=listed, at=now, feed="store"
            )
            self.link.publish(self.topics.replica(device_id), batch.to_bytes(), qos=1)

    def _serve_replica(self, request: ReplicaRequest, now: datetime) -> None:
        self.counters.replica_requests += 1
        if request.feed == "store":
            self._serve_store_feed(request, now)
            return
        with self.sessions() as session, session.begin():
            self._seen(session, {request.device_id: request.store_id}, now)
        after = request.after_seq
        while True:
            with self.sessions() as session:
                chunk = stored_events(session, self.vault, after, REPLICA_CHUNK)
            if not chunk:
                return
            batch = ReplicaBatch(
                after_seq=after,
                to_seq=chunk[-1][0],
                events=[
                    ReplicaEvent(hq_seq=seq, event=ev)
                    for seq, ev in chunk
                    if ev.device_id != request.device_id
                ],
                at=now,
            )
            self.link.publish(self.topics.replica(request.device_id), batch.to_bytes(), qos=1)
            after = chunk[-1][0]
            if len(chunk) < REPLICA_CHUNK:
                return

    def _serve_store_feed(self, request: ReplicaRequest, now: datetime) -> None:
        """Sends the device its store's feed after its cursor, in chunks; from now on it
        follows the store's feed, not the chain's."""

        def follow(session: Session) -> None:
            store_id = device_store(session, request.device_id)
            if store_id is not None and store_id != request.store_id:
                raise ProtocolError(
                    f"{request.device_id} of store {store_id} asked for store "
                    f"{request.store_id}'s feed"
                )
            self._seen(session, {request.device_id: request.store_id}, now)
            device = session.get(FleetDevice, request.device_id)
            if device is not None:
                device.replica_feed = "store"
                device.reads_redemptions = request.redemptions

        self.in_transaction(follow)
        self._fleet = (-FLEET_CACHE_S, [])  # read the fleet again: this kiosk follows its store
        after = request.after_seq
        while True:
            with self.sessions() as session:
                last, items = feed_chunk(session, self.vault, request.store_id, after)
            if last == after:
                return
            batch = ReplicaBatch(
                after_seq=after,
                to_seq=last,
                events=[
                    i
                    if i.member is None
                    else i.model_copy(update={"member": i.member.for_reader(request.redemptions)})
                    for i in items
                    if i.event is None or i.event.device_id != request.device_id
                ],
                at=now,
                feed="store",
            )
            self.link.publish(self.topics.replica(request.device_id), batch.to_bytes(), qos=1)
            after = last

    def _fetch_member(
        self, device_id: str, msg: Inbound, request: MemberFetch, now: datetime
    ) -> None:
        """Answers a kiosk's request for a member it does not hold (MQTT 5 request/response),
        and puts the member in its store's feed from now on."""
        if request.device_id != device_id:
            raise ProtocolError(f"{device_id} asked for a member as {request.device_id}")
        reply = self.topics.member(device_id)
        if msg.response_topic not in (None, reply):
            raise ProtocolError(f"{device_id} asked for an answer on {msg.response_topic!r}")

        def fetch(session: Session) -> tuple[MemberSnapshot | None, list[FeedNumbered]]:
            store_id = device_store(session, device_id)
            if store_id is not None and store_id != request.store_id:
                raise ProtocolError(
                    f"{device_id} of store {store_id} asked for a member for {request.store_id}"
                )
            return fetch_member(
                session, self.vault, request.store_id, now, request.card_no, request.phone_hash
            )

        found, items = self.in_transaction(fetch)
        with self._counting:
            self.counters.fetches += 1
        answer = MemberFetchResult(
            found=found is not None,
            member=None if found is None else found.for_reader(request.redemptions),
            at=now,
        )
        self.fetch_link.publish(reply, answer.to_bytes(), qos=1, correlation=msg.correlation)
        if found is not None and items:
            members = {found.member_id: found}
            for kiosk, store_id, feed in self._kiosks({request.store_id}):
                if feed == "store" and store_id == request.store_id:
                    self._publish_feed(kiosk, items, {}, now, members)

    def _check_voucher(
        self, device_id: str, msg: Inbound, request: VoucherCheck, now: datetime
    ) -> None:
        """Answers a kiosk's check of a gift voucher another kiosk printed (MQTT 5
        request/response); a claim is recorded in the same transaction (see
        :func:`hq.vouchers.check_voucher`)."""
        if request.device_id != device_id:
            raise ProtocolError(f"{device_id} asked about a voucher as {request.device_id}")
        reply = self.topics.voucher(device_id)
        if msg.response_topic not in (None, reply):
            raise ProtocolError(f"{device_id} asked for an answer on {msg.response_topic!r}")

        def check(session: Session) -> VoucherCheckResult:
            store_id = device_store(session, device_id)
            if store_id is not None and store_id != request.store_id:
                raise ProtocolError(
                    f"{device_id} of store {store_id} asked about a voucher for {request.store_id}"
                )
            return check_voucher(session, request, request.store_id, now)

        answer = self.in_transaction(check)
        with self._counting:
            self.counters.voucher_checks += 1
        self.fetch_link.publish(reply, answer.to_bytes(), qos=1, correlation=msg.correlation)

    def _answer_coupon(self, device_id: str, msg: Inbound, ask: CouponAsk, now: datetime) -> None:
        """Answers a kiosk about HQ's coupons (MQTT 5 request/response): a member's wallet,
        signed, or one coupon checked or used (see :func:`hq.coupons.answer`)."""
        if ask.device_id != device_id:
            raise ProtocolError(f"{device_id} asked about coupons as {ask.device_id}")
        reply = self.topics.coupon_answer(device_id)
        if msg.response_topic not in (None, reply):
            raise ProtocolError(f"{device_id} asked for an answer on {msg.response_topic!r}")

        def ask_hq(session: Session) -> CouponAnswer:
            store_id = device_store(session, device_id)
            if store_id is not None and store_id != ask.store_id:
                raise ProtocolError(
                    f"{device_id} of store {store_id} asked about coupons for {ask.store_id}"
                )
            return answer_coupon(session, ask, device_id, now, self.coupon_key)

        answer = self.in_transaction(ask_hq)
        with self._counting:
            self.counters.coupon_asks += 1
        self.fetch_link.publish(reply, answer.to_bytes(), qos=1, correlation=msg.correlation)

    @cached_property
    def coupon_key(self) -> Ed25519PrivateKey | None:
        """HQ's command key, which signs the coupons in members' wallets (None without one)."""
        from hq.commands import load_command_key  # hq.commands reads this module's config

        if not self.config.command_key or not Path(self.config.command_key).is_file():
            return None
        return load_command_key(Path(self.config.command_key))

    def _publish_blocklist(self, result: Ingest, now: datetime) -> None:
        reasons = sorted({r for _, r in result.blocked_cards})
        update = BlocklistUpdate(
            update_id=f"ev-{result.stored[-1][0]}",
            add=[c for c, _ in result.blocked_cards],
            reason=",".join(reasons)[:256],
            issued_at=now,
            expires_at=now + timedelta(seconds=self.config.blocklist_ttl_s),
        )
        publish_blocklist(self.link, self.topics, update)


def publish_command(link: MqttLink, topics: Topics, command: Command) -> bool:
    """Publishes a signed command to its device, QoS 1, expiring with the command; the result
    is asked for on the device's own ``command/result`` topic (a device may publish only on
    its own topics), where HQ's workers hear it too, with the transaction as correlation
    data. False when the link is not connected."""
    ttl = max(1, int((command.expires_at - command.issued_at).total_seconds()))
    return link.publish(
        topics.command(command.device_id),
        command.to_bytes(),
        qos=1,
        response_topic=topics.command_result(command.device_id),
        correlation=command.transaction.encode(),
        expiry_s=ttl,
    )


def publish_blocklist(link: MqttLink, topics: Topics, update: BlocklistUpdate) -> bool:
    """Blocklist updates carry their expiry twice: in the payload and as MQTT message expiry."""
    ttl = int((update.expires_at - update.issued_at).total_seconds())
    return link.publish(topics.blocklist(), update.to_bytes(), qos=1, expiry_s=ttl)


def load_hq_config(path: Path | None, **overrides: object) -> HqConfig:
    """HQ's TOML config file (optional), then command-line overrides that are set.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a value is out of range (one
            line naming the key).
    """
    import tomllib

    from pydantic import ValidationError

    from edge.domain.errors import ConfigError, describe_invalid

    raw: dict[str, object] = {}
    source = str(path) if path is not None else "HQ's settings"
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read HQ's config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HqConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_invalid(exc.errors())}") from None


def dump(obj: object) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
