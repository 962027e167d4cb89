"""Every MQTT topic and payload of the member-center protocol, version 1.

The kiosk's agent, HQ, the lane simulator, the broker's ACL and the tests all take topics and
schemas from here; ``docs/protocol.md`` describes the same table in prose. A payload is JSON
(UTF-8) with a ``v`` field; a receiver parses it with :func:`decode`, which refuses anything
that is not exactly a valid message of the expected schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from string import Formatter
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

VERSION = 1
DEFAULT_PREFIX = "mck/v1"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_BATCH_EVENTS = 1000
MAX_SNAPSHOT_ENTRIES = 20000
DAYS_PER_MONTH = 30.44


def months_before(at: datetime, months: int) -> datetime:
    """``months`` before ``at``, as kiosks (``sync.hold_months``) and HQ (``hold_months``)
    both count how long a store holds a member of another store it does not see."""
    return at - timedelta(days=round(months * DAYS_PER_MONTH))


# A name that is safe as one topic level: no wildcards, separators or control characters.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
EventId = Annotated[str, StringConstraints(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")]
CardNo = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,20}$")]
Ref = Annotated[str, StringConstraints(max_length=64)]
Text = Annotated[str, StringConstraints(max_length=256)]
MessageTermsVersion = Annotated[str, StringConstraints(min_length=1, max_length=32)]
# a phone number sealed to HQ's contact key, base64 (edge.security.contact; about 100 chars)
SealedPhone = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9+/]+={0,2}$")
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class ProtocolError(ValueError):
    """A message that is not a valid message of its topic: log it and drop it."""


class Message(BaseModel):
    """A versioned payload: unknown fields are refused, values are immutable.

    Every model here builds its validator on first use (``defer_build``): a process builds
    only those of the messages it handles (the touchscreen a handful of events, not the whole
    protocol), about 3 MB less at import.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    v: Literal[1] = 1

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


class Loose(BaseModel):
    """The data of a business event: known fields are checked, newer extra ones are kept."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


M = TypeVar("M", bound=BaseModel)


def decode(schema: type[M], payload: bytes) -> M:
    """Parses ``payload`` as ``schema``; raises :class:`ProtocolError` saying why not.

    Parsing is strict: a number sent as a string (``"seq": "10004"``), a float for an integer
    or a string for a boolean is a wrong type, not something to coerce.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return schema.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(payload)"
        raise ProtocolError(f"{schema.__name__}: {where}: {first['msg']}") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{schema.__name__}: not JSON: {exc}") from None


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- device status


class DeviceStatus(Message):
    """Retained on ``status``; the broker publishes the ``offline`` one as the last will."""

    device_id: Name
    store_id: Name
    role: Literal["kiosk", "lane", "hq"]
    state: Literal["online", "offline"]
    at: AwareDatetime
    version: Text = ""


# --------------------------------------------------------------------------- telemetry


class DeviceHealth(Message):
    """One peripheral's health as its driver reports it.

    ``state`` holds the words of ``drivers.health.HealthState``, written out because HQ, which
    reads this module, may not import the drivers; tests/sync/test_protocol.py holds them equal.
    """

    state: Literal["ok", "degraded", "failed", "unknown"]
    code: Text = ""
    reason: Text = ""
    at: AwareDatetime | None = None


class Throttling(Message):
    """``vcgencmd get_throttled`` decoded: what is happening now and what happened since boot."""

    raw: int = Field(ge=0)
    undervoltage_now: bool
    freq_capped_now: bool
    throttled_now: bool
    soft_temp_limit_now: bool
    undervoltage_occurred: bool
    freq_capped_occurred: bool
    throttled_occurred: bool
    soft_temp_limit_occurred: bool


class StorageWear(Message):
    """The SD card or eMMC: wear estimates (JEDEC life time, 1 = 0-10 % used) and free space."""

    device: Text
    life_time_a: int | None = Field(None, ge=0, le=0x0F)
    life_time_b: int | None = Field(None, ge=0, le=0x0F)
    pre_eol: int | None = Field(None, ge=0, le=3)
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)


class Telemetry(Message):
    """Health of the appliance and what a fleet engineer needs to foresee failures."""

    device_id: Name
    store_id: Name
    at: AwareDatetime
    version: Text
    uptime_s: float = Field(ge=0)
    outbox_depth: int = Field(ge=0)
    oldest_pending_at: AwareDatetime | None = None
    last_sync_at: AwareDatetime | None = None
    replica_cursor: int = Field(0, ge=0)
    rules_version: int = Field(0, ge=0)  # HQ's rules in force (0: the device's own)
    # HQ's gift catalogue applied here; left out of the JSON while there is none (0), so a
    # kiosk that never had one reads as it did for an HQ of the version before the field
    catalogue_version: int = Field(0, ge=0, exclude_if=lambda v: v == 0)
    devices: dict[Name, DeviceHealth] = Field(default_factory=dict, max_length=64)
    storage: StorageWear | None = None
    temperature_c: float | None = Field(None, ge=-60, le=200)
    throttling: Throttling | None = None
    clock_offset_s: float | None = None
    camera_fps: float | None = Field(None, ge=0, le=1000)
    last_scan_at: AwareDatetime | None = None
    last_print_at: AwareDatetime | None = None
    faults: list[Text] = Field(default_factory=list, max_length=64)
    # the public half of the key the device signs its vouchers and coupons with (raw Ed25519,
    # base64url without padding): HQ checks another store's voucher or coupon with it
    signing_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")] | None = Field(
        None, exclude_if=lambda v: v is None
    )


# --------------------------------------------------------------------------- business events


class LedgerEntryData(Loose):
    """A ledger entry as services emit it: HQ and replicas insert it with the same id."""

    id: EventId
    member_id: EventId
    kind: Annotated[str, StringConstraints(min_length=1, max_length=24)]
    points: int = Field(ge=-(10**9), le=10**9)
    lot_id: EventId | None = None
    ref: Ref = ""
    at: AwareDatetime
    store_id: Name
    device_id: Name
    expires_at: AwareDatetime | None = None
    available_at: AwareDatetime | None = None
    # Why, for an entry HQ booked with a note (a merge's); left out of the JSON when empty.
    note: Text = Field("", exclude_if=lambda v: not v)

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a ledger entry moves points")
        return value


class EntriesData(Loose):
    """Any event that moves points carries its entries."""

    member_id: EventId
    entries: list[LedgerEntryData] = Field(default_factory=list, max_length=1000)
    card_no: CardNo | None = None


class AdjustmentData(EntriesData):
    """Points staff credited or took, with why; a settlement clears the member's overdraft."""

    adjustment_id: EventId
    reason: Annotated[str, StringConstraints(min_length=1, max_length=24)]
    note: Text = ""
    staff_id: Name
    approved_by: Name | None = None


class RefundData(EntriesData):
    """Points a receipt earned, taken back when a lane refunded (part of) its money."""

    refund_id: Ref
    receipt_id: Ref
    amount_cents: int = Field(gt=0, le=10**8)


class MemberRegisteredData(EntriesData):
    phone_hash: Annotated[str, StringConstraints(max_length=64)] | None = None
    phone_masked: Annotated[str, StringConstraints(max_length=16)] = ""
    card_no: CardNo
    card_type: Annotated[str, StringConstraints(max_length=16)] = "physical"
    tier: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    consent_version: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    referrer_id: EventId | None = None
    name: Annotated[str, StringConstraints(max_length=32)] | None = None
    birthday: date | None = None
    # The member's separate consent to messages (SMS reminders): the version of the message
    # terms agreed to, and the phone number sealed to HQ's contact key (base64; only HQ
    # opens it). Both absent when the member did not agree; the number is absent too when the
    # kiosk had no contact key. HQ stores and relays the event without ``phone_sealed``.
    message_consent_version: MessageTermsVersion | None = None
    phone_sealed: SealedPhone | None = None


class MemberMessageConsentData(Loose):
    """A member gave (``version``: the message terms agreed to, with ``phone_sealed`` when the
    kiosk could seal it) or withdrew (``version`` null) their consent to messages
    (``member.message_consent``)."""

    member_id: EventId
    version: MessageTermsVersion | None
    phone_sealed: SealedPhone | None = None

    @model_validator(mode="after")
    def _sealed_only_when_given(self) -> MemberMessageConsentData:
        if self.version is None and self.phone_sealed is not None:
            raise ValueError("a withdrawal carries no phone number")
        return self


class MemberUpdatedData(Loose):
    member_id: EventId
    phone_hash: Annotated[str, StringConstraints(max_length=64)] | None = None
    phone_masked: Annotated[str, StringConstraints(max_length=16)] = ""


class MemberDeletedData(Loose):
    member_id: EventId
    cards_blocked: list[CardNo] = Field(default_factory=list, max_length=100)


class TierChangedData(Loose):
    member_id: EventId
    after: Annotated[str, StringConstraints(min_length=1, max_length=16)]


class CardReplacedData(Loose):
    member_id: EventId
    old_card_no: CardNo
    new_card_no: CardNo
    card_type: Annotated[str, StringConstraints(max_length=16)] = "physical"


class CardBlocklistData(Loose):
    add: list[CardNo] = Field(max_length=1000)
    reason: Text = ""


class LowStockData(Loose):
    sku: Name
    stock: int
    threshold: int


class DeviceAlertData(Loose):
    """``alert.*`` events a device raises for HQ staff (door opened, printer out of paper)."""

    code: Name
    detail: Text = ""


class GiftCollectedData(Loose):
    """A gift handed over against its voucher (``gift.collected``).

    ``verified`` is False for a voucher of another kiosk taken offline on the collecting
    desk's own record; then ``redemption_id`` is None and ``sku`` empty.
    """

    voucher_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    issuer_device_id: Name
    redemption_id: EventId | None = None
    sku: Annotated[str, StringConstraints(max_length=32)] = ""
    qty: int = Field(0, ge=0, le=1000)
    staff_id: Annotated[str, StringConstraints(max_length=32)] = ""
    verified: bool
    offline: bool = False


class GiftRedeemedData(EntriesData):
    """Points redeemed for a gift or coupons (``gift.redeemed``). A gift's voucher id is the
    redemption id; ``name`` and ``valid_until`` (the date printed on the voucher) came with
    the voucher check, and events from before it lack them."""

    redemption_id: EventId | None = None
    sku: Annotated[str, StringConstraints(max_length=32)] = ""
    name: Text = ""
    qty: int = Field(0, ge=0, le=1000)
    coupons: int = Field(0, ge=0)
    valid_until: date | None = None
    # a coupon redemption's coupons, for HQ to answer about them at any store of the chain;
    # events from before it lack them
    coupon_ids: list[EventId] = Field(default_factory=list, max_length=1000)
    coupon_value_cents: int = Field(0, ge=0, le=10_000_000)
    coupon_expires_at: AwareDatetime | None = None


class VoucherLapsedData(EntriesData):
    """A gift voucher not collected by its printed date (``gift.voucher_lapsed``): its gift
    went back in stock, and its points too when HQ's rules say so (``entries``)."""

    redemption_id: EventId
    sku: Annotated[str, StringConstraints(max_length=32)]
    qty: int = Field(ge=1, le=1000)
    points_returned: int = Field(ge=0)


class CouponUsedData(Loose):
    """A coupon used at this device (``coupon.used``): one it printed, or one of HQ's
    (``issuer`` ``HQ``, with its ``campaign_id``), accepted ``offline`` when HQ could not be
    asked: HQ then records the use when the event comes and flags a second one."""

    coupon_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    sku: Annotated[str, StringConstraints(max_length=32)] = ""
    value_cents: int = Field(0, ge=0)
    ref: Annotated[str, StringConstraints(max_length=64)] = ""
    issuer: Annotated[str, StringConstraints(max_length=64)] = ""
    campaign_id: Annotated[str, StringConstraints(max_length=24)] = ""
    offline: bool = False


EVENT_DATA: dict[str, type[Loose]] = {
    "member.registered": MemberRegisteredData,
    "member.updated": MemberUpdatedData,
    "member.message_consent": MemberMessageConsentData,
    "member.deleted": MemberDeletedData,
    "member.tier_changed": TierChangedData,
    "card.replaced": CardReplacedData,
    "card.blocklist": CardBlocklistData,
    "points.accrued": EntriesData,
    "points.checkin": EntriesData,
    "points.birthday": EntriesData,
    "points.expired": EntriesData,
    "points.adjusted": AdjustmentData,
    "points.refunded": RefundData,
    "gift.redeemed": GiftRedeemedData,
    "gift.collected": GiftCollectedData,
    "gift.voucher_lapsed": VoucherLapsedData,
    "coupon.used": CouponUsedData,
    "alert.low_stock": LowStockData,
    "alert.device": DeviceAlertData,
}


class Event(Message):
    """One outbox row as it travels: the envelope ``Tx.emit`` wrote, plus the outbox seq."""

    event_id: EventId
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+){0,3}$", max_length=48)]
    store_id: Name
    device_id: Name
    at: AwareDatetime
    data: dict[str, Any]
    seq: int = Field(ge=1)

    @cached_property
    def stored_json(self) -> str:
        """The event as JSON, as HQ stores it; worked out once an event."""
        return self.model_dump_json()

    @cached_property
    def typed_data(self) -> Loose | None:
        """The data validated against its kind's schema (None for a kind with no schema);
        raises :class:`ProtocolError` when it does not fit. Worked out once an event.

        Strict, as on the wire: the data is checked as the JSON it travelled as, so times
        are ISO strings and a number in quotes is refused.
        """
        schema = EVENT_DATA.get(self.kind)
        if schema is None:
            return None
        try:
            return schema.model_validate_json(to_json(self.data), strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ProtocolError(f"{self.kind} data: {where}: {first['msg']}") from None


class EventBatch(Message):
    """A run of outbox events, in outbox order, published with QoS 1 on ``events``."""

    device_id: Name
    batch_id: EventId
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class Quarantined(Message):
    event_id: Annotated[str, StringConstraints(max_length=64)]
    reason: Text


class EventAck(Message):
    """HQ's application-level acknowledgement: these events are stored (exactly once).

    HQ stores a device's events in outbox order only. When a batch starts past the next seq
    HQ expects (an earlier batch was lost on the way), or repeats a seq already taken,
    ``expect_seq`` says which seq HQ needs next, so the device resends from there at once
    instead of waiting for its ack timeout. It is left out of the JSON when there is nothing
    to say, so an acknowledgement of an ordinary batch reads as it always did.
    """

    batch_id: EventId | None = None
    event_ids: list[EventId] = Field(max_length=MAX_BATCH_EVENTS)
    quarantined: list[Quarantined] = Field(default_factory=list, max_length=MAX_BATCH_EVENTS)
    expect_seq: int | None = Field(None, ge=1)
    at: AwareDatetime

    def to_bytes(self) -> bytes:
        exclude = {"expect_seq"} if self.expect_seq is None else None
        return self.model_dump_json(exclude=exclude).encode()


# --------------------------------------------------------------------------- replica fan-out


Feed = Literal["chain", "store"]
"""What a replica follows: ``store`` (HQ's numbering of what concerns the device's own store:
the events of the members it holds, and snapshots of members as it comes to hold them), or
``chain`` (every event of the chain, by ``hq_seq``: what a kiosk of protocol 1.0 asks for)."""

CardStateName = Literal["active", "lost", "blocked", "replaced"]


class SnapshotCard(Message):
    card_no: CardNo
    state: CardStateName
    card_type: Annotated[str, StringConstraints(max_length=16)] = "physical"
    replaced_by: CardNo | None = None


class SnapshotRedemption(Message):
    """One gift or coupon redemption of the member, at any device of the chain: what a
    gift's per-member limit counts."""

    redemption_id: EventId
    sku: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    qty: int = Field(ge=1, le=1000)


class MemberSnapshot(Message):
    """A member as HQ holds them: their cards and every ledger entry (credits with their
    lot's dates), so a kiosk that has never seen them builds the same balance and lots,
    and their gift and coupon redemptions (``redemptions``, left out by an HQ from before
    they came with it), so the kiosk counts them against a gift's per-member limit.

    Applying one is idempotent (entries, lots and cards keep their ids), so a snapshot that
    overlaps events the kiosk already applied, or arrives twice, changes nothing twice.
    """

    member_id: EventId
    store_id: Name
    tier: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    phone_hash: Annotated[str, StringConstraints(max_length=64)] | None = None
    phone_masked: Annotated[str, StringConstraints(max_length=16)] = ""
    name: Annotated[str, StringConstraints(max_length=32)] | None = None
    birthday: date | None = None
    consent_version: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    created_at: AwareDatetime
    deleted: bool = False
    cards: list[SnapshotCard] = Field(default_factory=list, max_length=100)
    entries: list[LedgerEntryData] = Field(default_factory=list, max_length=MAX_SNAPSHOT_ENTRIES)
    # Left out of the JSON when there are none, so such a snapshot reads as it did for
    # kiosks of the version before them.
    redemptions: list[SnapshotRedemption] = Field(
        default_factory=list, max_length=MAX_SNAPSHOT_ENTRIES, exclude_if=lambda v: not v
    )
    # A merge (合并会员, edge.domain.merges): the member this one was merged into, or the
    # members merged into this one. Left out of the JSON when there is none, so a snapshot
    # of a member never merged reads as before.
    merged_into: EventId | None = Field(None, exclude_if=lambda v: v is None)
    merged_from: list[EventId] = Field(
        default_factory=list, max_length=100, exclude_if=lambda v: not v
    )

    def for_reader(self, reads_redemptions: bool) -> MemberSnapshot:
        """The snapshot as a kiosk reads it: without ``redemptions`` for one that does not
        say it reads them (a kiosk from before them refuses a field it does not know)."""
        if reads_redemptions or not self.redemptions:
            return self
        return self.model_copy(update={"redemptions": []})


class ReplicaEvent(Message):
    """One item of a feed, numbered ``hq_seq`` in it: an event, or (store feed only) a
    member's snapshot."""

    hq_seq: int = Field(ge=1)
    event: Event | None = None
    member: MemberSnapshot | None = None

    @model_validator(mode="after")
    def _one(self) -> ReplicaEvent:
        if (self.event is None) == (self.member is None):
            raise ValueError("an item is an event or a member, not both or neither")
        return self


class ReplicaBatch(Message):
    """Items of one feed, numbered by HQ: ``(after_seq, to_seq]`` with none missing.

    A device applies a batch only if ``after_seq`` is the cursor it holds for that feed; a
    gap makes it ask for a resend (:class:`ReplicaRequest`) from its cursor, so a message the
    broker dropped is fetched again, and one that arrives twice is ignored.
    """

    after_seq: int = Field(ge=0)
    to_seq: int = Field(ge=0)
    events: list[ReplicaEvent] = Field(max_length=MAX_BATCH_EVENTS)
    at: AwareDatetime
    feed: Feed = "chain"

    def to_bytes(self) -> bytes:
        """A chain batch reads exactly as protocol 1.0 wrote it (no ``feed``, no ``member``),
        so a kiosk not yet updated takes it."""
        if self.feed == "chain":
            exclude: Any = {"feed": True, "events": {"__all__": {"member"}}}
            return self.model_dump_json(exclude=exclude).encode()
        return self.model_dump_json().encode()


class ReplicaRequest(Message):
    """The device's cursor in its feed: send me everything after it."""

    device_id: Name
    store_id: Name
    after_seq: int = Field(ge=0)
    feed: Feed = "chain"
    # The device reads a member snapshot's ``redemptions``: HQ leaves them out of what it
    # sends a kiosk that does not say so (left out of the JSON when false, as before it).
    redemptions: bool = Field(False, exclude_if=lambda v: not v)


# --------------------------------------------------------------------------- members on demand


class MemberFetch(Message):
    """A kiosk asks HQ for a member it does not hold (met at its store: a card, a member code
    or a phone), as an MQTT 5 request: the response topic is the device's own ``member``
    topic and the correlation data is the kiosk's; HQ answers with :class:`MemberFetchResult`
    and from then on sends the member's changes to the kiosk's store."""

    device_id: Name
    store_id: Name
    card_no: CardNo | None = None
    phone_hash: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    # As in :class:`ReplicaRequest`: the kiosk reads the snapshot's ``redemptions``.
    redemptions: bool = Field(False, exclude_if=lambda v: not v)

    @model_validator(mode="after")
    def _one_key(self) -> MemberFetch:
        if (self.card_no is None) == (self.phone_hash is None):
            raise ValueError("name the member by exactly one of card_no or phone_hash")
        return self


class MemberFetchResult(Message):
    """HQ's answer: the member's snapshot, or ``found`` false (no such card or phone at HQ)."""

    found: bool
    member: MemberSnapshot | None = None
    at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> MemberFetchResult:
        if self.found != (self.member is not None):
            raise ValueError("a found member comes with its snapshot, and only then")
        return self


# --------------------------------------------------------------------------- vouchers


class VoucherCheck(Message):
    """A kiosk asks HQ about a gift voucher another kiosk printed (MQTT 5 request: the
    response topic is the device's own ``voucher`` topic); with ``claim`` HQ records it
    collected at this kiosk at once if nobody collected it before."""

    device_id: Name
    store_id: Name
    issuer_device_id: Name
    voucher_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    claim: bool = False
    today: date | None = None  # the kiosk's local date: a voucher past its date is not claimed
    # the voucher's signed code, which HQ checks with the printing kiosk's key
    code: Annotated[str, StringConstraints(max_length=512)] = Field("", exclude_if=lambda v: not v)


VoucherState = Literal["unknown", "known", "collected", "claimed", "forged"]


class VoucherCheckResult(Message):
    """HQ's answer: ``unknown`` (no gift redeemed with it that HQ heard of), ``known`` (not
    collected; asked without ``claim``), ``collected`` (where and when, first), ``claimed``
    (collected for the asking kiosk now) or ``forged`` (its code does not check with the
    printing kiosk's key). The gift comes with every state but ``unknown`` and ``forged``."""

    issuer_device_id: Name
    voucher_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    state: VoucherState
    sku: Annotated[str, StringConstraints(max_length=32)] = ""
    name: Text = ""
    qty: int = Field(0, ge=0, le=1000)
    card_masked: Annotated[str, StringConstraints(max_length=32)] = ""
    valid_until: date | None = None
    collected_store_id: Name | None = None
    collected_device_id: Name | None = None
    collected_at: AwareDatetime | None = None
    at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> VoucherCheckResult:
        if (self.state == "collected") != (self.collected_at is not None):
            raise ValueError("a collected voucher says when, and only then")
        if self.state not in ("unknown", "forged") and not self.sku:
            raise ValueError("a known voucher names its gift")
        return self


# --------------------------------------------------------------------------- lanes


class LanePurchase(Message):
    """A purchase of an identified member at a checkout lane; the receipt id is the key."""

    receipt_id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
    lane_id: Name
    card_no: CardNo
    amount_cents: int = Field(gt=0, le=100_000_000)
    at: AwareDatetime


class LanePurchaseResult(Message):
    receipt_id: Annotated[str, StringConstraints(max_length=64)]
    ok: bool
    points: int = 0
    balance: int = 0
    duplicate: bool = False
    error: Text = ""


class LaneRefund(Message):
    """Money a lane returned on a receipt (all of it or part); the refund id is the key."""

    refund_id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
    receipt_id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
    lane_id: Name
    amount_cents: int = Field(gt=0, le=100_000_000)
    at: AwareDatetime


class LaneRefundResult(Message):
    """The points the refund took back, the balance after, and whether the member now owes
    points; or why it was refused (``unknown_receipt``, ``refund_too_large`` ...)."""

    refund_id: Annotated[str, StringConstraints(max_length=64)]
    ok: bool
    points: int = 0
    balance: int = 0
    overdraft: bool = False
    duplicate: bool = False
    error: Text = ""
    message: Text = ""


class CouponCheck(Message):
    """A lane asks whether a printed coupon is good (and, with ``use``, spends it)."""

    transaction: Name
    lane_id: Name
    code: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    ref: Ref = ""
    use: bool = True


class CouponCheckResult(Message):
    """The kiosk's answer to a lane. A coupon of an HQ campaign also says what it gives
    (``kind``; ``threshold_cents`` for 满减, ``percent`` for a percentage off, ``sku`` for a
    gift); those fields are left out of the JSON for a coupon a kiosk printed."""

    transaction: Name
    ok: bool
    coupon_id: Annotated[str, StringConstraints(max_length=64)] = ""
    sku: Annotated[str, StringConstraints(max_length=32)] = ""
    value_cents: int = 0
    error: Text = ""
    message: Text = Field("", exclude_if=lambda v: not v)
    campaign_id: Annotated[str, StringConstraints(max_length=24)] = Field(
        "", exclude_if=lambda v: not v
    )
    kind: Annotated[str, StringConstraints(max_length=16)] = Field("", exclude_if=lambda v: not v)
    threshold_cents: int = Field(0, ge=0, exclude_if=lambda v: not v)
    percent: int = Field(0, ge=0, le=100, exclude_if=lambda v: not v)
    offline: bool = Field(False, exclude_if=lambda v: not v)


# --------------------------------------------------------------------------- HQ's coupons

CampaignIdText = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,23}$")]
CouponIdText = Annotated[str, StringConstraints(min_length=3, max_length=64)]


class CampaignTerms(BaseModel):
    """What the coupons of one of HQ's campaigns give and when they can be used
    (:class:`edge.domain.coupons.Terms`, as it travels)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    campaign_id: CampaignIdText
    title: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    kind: Literal["amount_off", "threshold_off", "percent_off", "gift"]
    value_cents: int = Field(0, ge=0, le=10_000_000)
    threshold_cents: int = Field(0, ge=0, le=100_000_000)
    percent: int = Field(0, ge=0, le=90)
    gift_sku: Annotated[str, StringConstraints(max_length=32)] = ""
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    finished: bool = False


class WalletCoupon(BaseModel):
    """One coupon in a member's wallet, as HQ tells a kiosk: its signed code and terms."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    coupon_id: CouponIdText
    code: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    terms: CampaignTerms
    issued_at: AwareDatetime
    used_at: AwareDatetime | None = None


class CouponAsk(Message):
    """A kiosk asks HQ about its coupons (MQTT 5 request; the response topic is the device's
    own ``coupon`` topic): a member's ``wallet``, or one coupon to ``check`` or ``use``
    (used once in the whole chain: HQ records where)."""

    device_id: Name
    store_id: Name
    action: Literal["wallet", "check", "use"]
    member_id: EventId | None = None
    coupon_id: CouponIdText | None = None
    ref: Ref = ""
    # a coupon a kiosk printed: its signed code, which HQ checks with that kiosk's key
    code: Annotated[str, StringConstraints(max_length=512)] = Field("", exclude_if=lambda v: not v)

    @model_validator(mode="after")
    def _asks_about_something(self) -> CouponAsk:
        if (self.action == "wallet") != (self.member_id is not None):
            raise ValueError("a wallet names the member, and only a wallet does")
        if (self.action != "wallet") != (self.coupon_id is not None):
            raise ValueError("a check or a use names the coupon, and only they do")
        return self


class CouponAnswer(Message):
    """HQ's answer: ``ok`` or why not (``error`` a code, ``message`` a sentence), where and
    when a used coupon was used, and for a wallet its coupons."""

    action: Literal["wallet", "check", "use"]
    ok: bool
    error: Annotated[str, StringConstraints(max_length=48)] = ""
    message: Text = ""
    member_id: EventId | None = None
    coupon_id: CouponIdText | None = None
    used_store_id: Name | None = None
    used_at: AwareDatetime | None = None
    terms: CampaignTerms | None = None  # a checked or used coupon's campaign
    # a checked or used coupon a kiosk printed: what it is worth and until when
    issuer_device_id: Name | None = Field(None, exclude_if=lambda v: v is None)
    value_cents: int = Field(0, ge=0, exclude_if=lambda v: not v)
    sku: Annotated[str, StringConstraints(max_length=32)] = Field("", exclude_if=lambda v: not v)
    expires_at: AwareDatetime | None = Field(None, exclude_if=lambda v: v is None)
    coupons: list[WalletCoupon] = Field(default_factory=list, max_length=200)
    at: AwareDatetime


class LaneCard(Message):
    """A card's state for the lanes' list and, for a member's card, the member's tier and
    its benefit at the till: ``member_price_pct`` off the price (会员价)."""

    card_no: CardNo
    state: Literal["active", "lost", "blocked", "replaced"]
    tier: Annotated[str, StringConstraints(max_length=16)] | None = None
    member_price_pct: int = Field(0, ge=0, le=50)


class LaneCards(Message):
    """Cards lanes should now accept (new) or refuse; published by the store's kiosk."""

    cards: list[LaneCard] = Field(max_length=MAX_BATCH_EVENTS)
    at: AwareDatetime


# --------------------------------------------------------------------------- HQ pushes


class BlocklistUpdate(Message):
    """Cards to refuse everywhere (or to accept again); never applied after ``expires_at``."""

    update_id: Name
    add: list[CardNo] = Field(default_factory=list, max_length=10_000)
    remove: list[CardNo] = Field(default_factory=list, max_length=10_000)
    reason: Text = ""
    issued_at: AwareDatetime
    expires_at: AwareDatetime


MAX_PICTURE_BYTES = 2_000_000
PICTURE_CHUNK_BYTES = 256 * 1024


class PictureRef(BaseModel):
    """A gift's picture as the catalogue names it: the SHA-256 and size of the file, whose
    chunks HQ keeps retained on ``hq/picture/<sha256>/<index>`` (:class:`PictureChunk`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    sha256: Sha256
    size: int = Field(ge=1, le=MAX_PICTURE_BYTES)


class CatalogueGift(Message):
    sku: Name
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    kind: Literal["gift", "coupon"] = "gift"
    points_price: int = Field(gt=0, le=10_000_000)
    low_stock: int = Field(0, ge=0, le=1_000_000)
    per_member_limit: int | None = Field(None, ge=1, le=1000)
    coupon_value_cents: int = Field(0, ge=0, le=10_000_000)
    coupon_valid_days: int = Field(30, ge=1, le=3650)
    active: bool = True
    # Left out of the JSON when there is none, so a catalogue without pictures reads as it
    # did for kiosks of the version before pictures.
    picture: PictureRef | None = Field(None, exclude_if=lambda v: v is None)


class PictureChunk(Message):
    """One piece of a gift's picture, retained on ``hq/picture/<sha256>/<index>``.

    Chunk ``index`` of ``count`` holds the bytes at ``index * PICTURE_CHUNK_BYTES`` (the last
    one the rest). A kiosk that lacks a picture its catalogue names subscribes to its chunks,
    joins them and keeps the picture only if the whole has the SHA-256 the catalogue gave
    and passes the checks of :mod:`edge.domain.pictures`.
    """

    sha256: Sha256
    size: int = Field(ge=1, le=MAX_PICTURE_BYTES)
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: Annotated[str, StringConstraints(max_length=(PICTURE_CHUNK_BYTES // 3 + 1) * 4)]

    @model_validator(mode="after")
    def _consistent(self) -> PictureChunk:
        check_chunk(self.size, PICTURE_CHUNK_BYTES, self.index, self.count, len(self.raw()))
        return self

    def raw(self) -> bytes:
        """The chunk's bytes (the model refuses data that is not base64)."""
        return chunk_data(self.data)


def check_chunk(size: int, chunk_bytes: int, index: int, count: int, held: int) -> None:
    """That chunk ``index`` of ``count`` of a ``size``-byte file cut in ``chunk_bytes``
    holds ``held`` bytes, as it must (``ValueError`` saying what is wrong)."""
    expected = -(-size // chunk_bytes)
    if count != expected:
        raise ValueError(f"count {count} does not fit {size} bytes in {chunk_bytes}")
    if index >= count:
        raise ValueError(f"chunk {index} of {count}")
    want = min(chunk_bytes, size - index * chunk_bytes)
    if held != want:
        raise ValueError(f"chunk {index} holds {held} bytes, not {want}")


def chunk_data(data: str) -> bytes:
    """A chunk's base64 ``data`` as bytes (``ValueError`` if it is not base64)."""
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise ValueError("data is not base64") from None


def picture_chunks(data: bytes) -> list[PictureChunk]:
    """``data`` (a picture file) as the chunks HQ publishes."""
    digest = hashlib.sha256(data).hexdigest()
    count = -(-len(data) // PICTURE_CHUNK_BYTES)
    return [
        PictureChunk(
            sha256=digest,
            size=len(data),
            index=i,
            count=count,
            data=base64.b64encode(
                data[i * PICTURE_CHUNK_BYTES : (i + 1) * PICTURE_CHUNK_BYTES]
            ).decode(),
        )
        for i in range(count)
    ]


class PointsPolicy(BaseModel):
    """How points are earned, held and expire: the one declaration of these fields and their
    bounds, for HQ's rules (:class:`PointsRules`) and the appliance's ``[points]`` section
    (``edge.config.PointsConfig``, which adds the defaults and the member days) alike."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    points_per_yuan: int = Field(ge=0, le=100, title="Base points per yuan spent")
    expiry_months: int = Field(
        ge=1, le=120, title="Lifetime of a lot", description="expires at the end of month N"
    )
    pending_days: int = Field(
        ge=0, le=90, title="Return window", description="days before new points can be spent"
    )
    checkin_points: int = Field(ge=0, le=10_000, title="Daily check-in points")
    birthday_bonus_points: int = Field(ge=0, le=100_000, title="Birthday bonus points")
    referral_bonus_points: int = Field(ge=0, le=100_000, title="Referral bonus points")
    # The one field with a default here: rules HQ published and devices stored before it
    # existed must still read (as False, what those devices did).
    expired_voucher_refund: bool = Field(
        False,
        title="Expired gift vouchers return their points",
        description="a voucher not collected by its printed date gives its points back; "
        "its gift goes back in stock either way",
    )


class PointsRules(PointsPolicy, Message):
    """The points section of HQ's rules: every field of :class:`PointsPolicy`, none left out."""


class OfflinePolicy(BaseModel):
    """The caps that bound double-spend risk while HQ is unreachable: the one declaration of
    these fields and their bounds, for HQ's rules (:class:`OfflineRules`) and the appliance's
    ``[offline]`` section (``edge.config.OfflineConfig``, which adds the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    offline_after_s: int = Field(ge=10, title="HQ silence before the device counts offline")
    max_points_per_redemption: int = Field(ge=0, title="Cap per redemption")
    max_points_per_member: int = Field(ge=0, title="Cap per member while offline")
    max_points_per_device: int = Field(ge=0, title="Cap per device while offline")
    max_offline_hours: int = Field(
        ge=1, le=720, title="Window", description="after it redemption pauses"
    )
    max_hq_coupons: int = Field(
        20, ge=0, le=10_000, title="HQ coupons a device accepts while offline"
    )


class OfflineRules(OfflinePolicy, Message):
    """The offline section of HQ's rules: every field of :class:`OfflinePolicy`."""


class MemberDayPolicy(BaseModel):
    """A member day (会员日): accruals multiplied on a day of every month or a weekday. The
    one declaration, for HQ's rules and the appliance's ``[[points.member_days]]`` alike."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    day_of_month: int | None = Field(None, ge=1, le=31, title="Day of month")
    weekday: int | None = Field(None, ge=0, le=6, title="Weekday, Monday = 0")
    multiplier_pct: int = Field(200, ge=100, le=1000, title="Multiplier in percent")

    @model_validator(mode="after")
    def _one_kind(self) -> MemberDayPolicy:
        if (self.day_of_month is None) == (self.weekday is None):
            raise ValueError("a member day names exactly one of day_of_month or weekday")
        return self


class TierPolicy(BaseModel):
    """One membership tier and its benefits: reached at ``threshold`` (cents or points, per
    the ladder's basis). The one declaration, for HQ's rules and ``[[tiers.levels]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    code: str = Field(min_length=1, max_length=16, title="Tier code")
    name_zh: str = Field(min_length=1, max_length=16, title="Chinese name")
    name_en: str = Field(min_length=1, max_length=24, title="English name")
    threshold: int = Field(ge=0, title="Threshold", description="rolling-period spend or points")
    multiplier_pct: int = Field(100, ge=100, le=1000, title="Accrual multiplier in percent")
    member_price_pct: int = Field(
        0, ge=0, le=50, title="Member price", description="percent off at the lanes"
    )


def check_ladder(levels: list[TierPolicy]) -> None:
    """A tier ladder starts at 0, climbs strictly and names each tier once."""
    if not levels or levels[0].threshold != 0:
        raise ValueError("the first tier must have threshold 0")
    thresholds = [t.threshold for t in levels]
    if thresholds != sorted(set(thresholds)):
        raise ValueError("tier thresholds must be strictly increasing")
    if len({t.code for t in levels}) != len(levels):
        raise ValueError("tier codes must be unique")


class Signed(Message):
    """A message HQ signs with its command key over every other field (:meth:`signed_bytes`)."""

    key_id: Name = "hq"
    signature: Annotated[str, StringConstraints(max_length=128)] = ""

    def signed_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signature_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.signature, validate=True)
        except ValueError:
            return b""


class Rules(Signed):
    """HQ's rules for the chain, one versioned and signed document (retained): points,
    offline caps and, when given, the member days and the tier ladder, which then replace the
    device's own. A newer version replaces an older one from ``effective_from`` (at once
    when absent); until then the rules before it stay in force."""

    version: int = Field(ge=1)
    issued_at: AwareDatetime
    effective_from: AwareDatetime | None = None
    points: PointsRules
    offline: OfflineRules
    member_days: list[MemberDayPolicy] | None = Field(None, max_length=62)
    tiers: list[TierPolicy] | None = Field(None, min_length=1, max_length=12)

    @model_validator(mode="after")
    def _ladder(self) -> Rules:
        if self.tiers is not None:
            check_ladder(self.tiers)
        return self

    def in_force_at(self, now: datetime) -> bool:
        return self.effective_from is None or self.effective_from <= now


RULES_SIGNING_DOMAIN = b"mck/rules/v1"


class Catalogue(Signed):
    """The gift catalogue (prices, kinds, limits, pictures by SHA-256): stock stays each
    store's own. HQ numbers its versions and signs each with its command key."""

    version: int = Field(ge=1)
    issued_at: AwareDatetime
    gifts: list[CatalogueGift] = Field(max_length=10_000)


CATALOGUE_SIGNING_DOMAIN = b"mck/catalogue/v1"


class Campaigns(Signed):
    """HQ's campaigns whose coupons can still be met at a till, one versioned, signed
    document (retained): a kiosk checks an HQ coupon against its campaign's terms here, and
    offline decides from them alone."""

    version: int = Field(ge=1)
    issued_at: AwareDatetime
    campaigns: list[CampaignTerms] = Field(default_factory=list, max_length=1000)


CAMPAIGNS_SIGNING_DOMAIN = b"mck/campaigns/v1"


class Command(Signed):
    """A command from HQ to one device, signed with HQ's command key.

    The signature covers every other field (:meth:`signed_bytes`), including the device id
    and the expiry, so it can be neither redirected to another device nor replayed late.
    """

    transaction: Name
    device_id: Name
    command: Name
    args: dict[str, str | int | bool] = Field(default_factory=dict, max_length=32)
    issued_at: AwareDatetime
    expires_at: AwareDatetime


COMMAND_SIGNING_DOMAIN = b"mck/command/v1"


class CommandResult(Message):
    """The answer on the request's response topic, echoing its transaction."""

    transaction: Name
    device_id: Name
    status: Literal["done", "refused", "expired", "failed", "bad_signature"]
    detail: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime


# --------------------------------------------------------------------------- backups to HQ

BACKUP_CHUNK_BYTES = 192 * 1024
MAX_BACKUP_CHUNK_BYTES = 256 * 1024
MAX_BACKUP_BYTES = 4 * 1024 * 1024 * 1024

# A backup file name: one path level, no dot files, the ``.db.gz`` of edge.lifecycle.backup.
BackupName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}\.db\.gz$")
]


class BackupManifest(BaseModel):
    """The manifest written beside a backup (``edge.lifecycle.backup``), as HQ keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    format: Literal[1] = 1
    file: BackupName
    sha256: Sha256
    size: int = Field(ge=1, le=MAX_BACKUP_BYTES)
    created_at: AwareDatetime
    store_id: Name
    device_id: Name
    ledger_entries: int = Field(ge=0)
    members: int = Field(ge=0)
    schema_revision: Annotated[str, StringConstraints(max_length=64)] | None = None


class BackupChunk(Message):
    """One piece of a backup file on its way to HQ (QoS 1 on ``backup``).

    Chunk ``index`` of ``count`` holds the bytes at ``index * chunk_bytes`` (the last one the
    rest); every chunk repeats the whole file's name, SHA-256, size and manifest, so HQ can
    check each against the others and the finished file against the announced digest.
    """

    device_id: Name
    name: BackupName
    sha256: Sha256
    size: int = Field(ge=1, le=MAX_BACKUP_BYTES)
    chunk_bytes: int = Field(ge=1024, le=MAX_BACKUP_CHUNK_BYTES)
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: Annotated[str, StringConstraints(max_length=(MAX_BACKUP_CHUNK_BYTES // 3 + 1) * 4)]
    manifest: BackupManifest

    @model_validator(mode="after")
    def _consistent(self) -> BackupChunk:
        check_chunk(self.size, self.chunk_bytes, self.index, self.count, len(self.raw()))
        m = self.manifest
        if (m.file, m.sha256, m.size, m.device_id) != (
            self.name,
            self.sha256,
            self.size,
            self.device_id,
        ):
            raise ValueError("the manifest describes another file or device")
        return self

    def raw(self) -> bytes:
        """The chunk's bytes (the model refuses data that is not base64)."""
        return chunk_data(self.data)

    @property
    def offset(self) -> int:
        return self.index * self.chunk_bytes


class BackupAck(Message):
    """HQ's answer to a complete backup: stored (``ok``), or refused and why."""

    device_id: Name
    name: BackupName
    sha256: Sha256
    ok: bool
    reason: Text = ""
    at: AwareDatetime


# --------------------------------------------------------------------------- staff lists

StaffId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


class StaffAccount(BaseModel):
    """One staff account of a store as HQ keeps it: the PIN only as its scrypt hash."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    staff_id: StaffId
    name: Annotated[str, StringConstraints(max_length=32)] = ""
    role: Literal["clerk", "supervisor", "technician"]
    pin_hash: Annotated[str, StringConstraints(pattern=r"^scrypt\$[0-9A-Za-z$+/=]{1,150}$")]
    active: bool


class StaffList(Signed):
    """Every staff account of one store, from HQ, signed with its command key (retained on
    the store's topic). A newer ``version`` replaces the list before it whole: once a store
    has one, only the accounts it names (and active) sign in at its kiosks."""

    store_id: Name
    version: int = Field(ge=1)
    issued_at: AwareDatetime
    accounts: list[StaffAccount] = Field(max_length=2_000)

    @model_validator(mode="after")
    def _one_each(self) -> StaffList:
        if len({a.staff_id for a in self.accounts}) != len(self.accounts):
            raise ValueError("a staff id is listed twice")
        return self


STAFF_SIGNING_DOMAIN = b"mck/staff/v1"


# --------------------------------------------------------------------------- topics

Role = Literal["kiosk", "lane", "hq", "bridge"]
"""What a broker client is; its certificate's CN is its id (``K001``, ``S001-L1``, ``hq``)."""

DEVICES: tuple[Role, ...] = ("kiosk", "lane")
"""Every device: each speaks and hears on its own device topics."""


def check_name(value: str) -> str:
    """A device, store or lane id used as a topic level."""
    if not _NAME_RE.match(value):
        raise ProtocolError(f"not usable in a topic: {value!r}")
    return value


@dataclass(frozen=True)
class TopicSpec:
    """One row of the protocol table: a topic, its payload, and who may publish and subscribe.

    ``publishers`` and ``subscribers`` are what docs/protocol.md lists and what the broker's
    ACL allows (``edge.sync.broker.render_acl`` renders it from this table), each party on
    its own part of the tree: a kiosk or a lane where ``{device}`` is its own id and
    ``{store}`` its own store, a lane where ``{lane}`` is its own id (a kiosk on every lane
    of its store), HQ everywhere. A store's bridge is no party of its own: it carries the
    device topics of its store's kiosks and lanes, and the pushes under ``hq/`` they read.
    """

    name: str
    pattern: str
    schema: type[BaseModel]
    qos: int
    retain: bool
    publishers: tuple[Role, ...]
    subscribers: tuple[Role, ...]
    expires: bool = False

    @cached_property
    def ids(self) -> frozenset[str]:
        """The ids the pattern names: ``device``, ``store``, ``lane``."""
        return frozenset(field for _, field, _, _ in Formatter().parse(self.pattern) if field)

    @property
    def tree(self) -> str:
        """The first level: ``device``, ``store`` or ``hq``."""
        return self.pattern.partition("/")[0]

    def levels(self, **ids: str) -> str:
        """The pattern with ``ids`` as given (unchecked: the ACL's lines put ``%u`` there) and
        ``+`` for any id not given."""
        return self.pattern.format_map({name: ids.get(name, "+") for name in self.ids})

    def fill(self, prefix: str, **ids: str) -> str:
        """:meth:`levels` under ``prefix``."""
        return f"{prefix}/{self.levels(**ids)}"


_HQ: tuple[Role, ...] = ("hq",)
_KIOSK: tuple[Role, ...] = ("kiosk",)
_LANE: tuple[Role, ...] = ("lane",)

# fmt: off
# name, pattern (under the prefix), payload, QoS, retained, publishers, subscribers
STATUS_TOPIC = TopicSpec("status", "device/{device}/status", DeviceStatus, 1, True,
                         ("kiosk", "lane", "hq"), _HQ)
TELEMETRY_TOPIC = TopicSpec("telemetry", "device/{device}/telemetry", Telemetry, 0, True,
                            DEVICES, _HQ)
EVENTS_TOPIC = TopicSpec("events", "device/{device}/events", EventBatch, 1, False,
                         DEVICES, _HQ)
ACK_TOPIC = TopicSpec("ack", "device/{device}/ack", EventAck, 1, False,
                      _HQ, DEVICES)
REPLICA_TOPIC = TopicSpec("replica", "device/{device}/replica", ReplicaBatch, 1, False,
                          _HQ, DEVICES)
REPLICA_REQUEST_TOPIC = TopicSpec("replica request", "device/{device}/replica/request",
                                  ReplicaRequest, 1, False, DEVICES, _HQ)
MEMBER_FETCH_TOPIC = TopicSpec("member request", "device/{device}/member/request", MemberFetch,
                                1, False, _KIOSK, _HQ)
MEMBER_TOPIC = TopicSpec("member", "device/{device}/member", MemberFetchResult, 1, False,
                         _HQ, _KIOSK)
VOUCHER_CHECK_TOPIC = TopicSpec("voucher request", "device/{device}/voucher/request",
                                VoucherCheck, 1, False, _KIOSK, _HQ)
VOUCHER_TOPIC = TopicSpec("voucher", "device/{device}/voucher", VoucherCheckResult, 1, False,
                          _HQ, _KIOSK)
COUPON_ASK_TOPIC = TopicSpec("coupon request", "device/{device}/coupon/request", CouponAsk,
                             1, False, _KIOSK, _HQ)
COUPON_ANSWER_TOPIC = TopicSpec("coupon", "device/{device}/coupon", CouponAnswer, 1, False,
                                _HQ, _KIOSK)
COMMAND_TOPIC = TopicSpec("command", "device/{device}/command", Command, 1, False,
                          _HQ, DEVICES, expires=True)
COMMAND_RESULT_TOPIC = TopicSpec("command result", "device/{device}/command/result",
                                 CommandResult, 1, False, DEVICES, _HQ)
BACKUP_TOPIC = TopicSpec("backup", "device/{device}/backup", BackupChunk, 1, False,
                         DEVICES, _HQ)
BACKUP_ACK_TOPIC = TopicSpec("backup ack", "device/{device}/backup/ack", BackupAck, 1, False,
                             _HQ, DEVICES)
LANE_PURCHASE_TOPIC = TopicSpec("lane purchase", "store/{store}/lane/{lane}/purchase",
                                LanePurchase, 1, False, _LANE, _KIOSK)
LANE_RESULT_TOPIC = TopicSpec("lane purchase result", "store/{store}/lane/{lane}/result",
                              LanePurchaseResult, 1, False, _KIOSK, _LANE)
LANE_REFUND_TOPIC = TopicSpec("lane refund", "store/{store}/lane/{lane}/refund",
                              LaneRefund, 1, False, _LANE, _KIOSK)
LANE_REFUND_RESULT_TOPIC = TopicSpec("lane refund result",
                                     "store/{store}/lane/{lane}/refund/result",
                                     LaneRefundResult, 1, False, _KIOSK, _LANE)
COUPON_CHECK_TOPIC = TopicSpec("coupon check", "store/{store}/lane/{lane}/coupon",
                               CouponCheck, 1, False, _LANE, _KIOSK)
COUPON_RESULT_TOPIC = TopicSpec("coupon result", "store/{store}/lane/{lane}/coupon/result",
                                CouponCheckResult, 1, False, _KIOSK, _LANE)
LANE_CARDS_TOPIC = TopicSpec("lane cards", "store/{store}/lanes/cards", LaneCards, 1, False,
                             _KIOSK, _LANE)
BLOCKLIST_TOPIC = TopicSpec("blocklist", "hq/blocklist", BlocklistUpdate, 1, False,
                            _HQ, DEVICES, expires=True)
CATALOGUE_TOPIC = TopicSpec("catalogue", "hq/catalogue", Catalogue, 1, True,
                            _HQ, DEVICES)
RULES_TOPIC = TopicSpec("rules", "hq/rules", Rules, 1, True,
                        _HQ, DEVICES)
PICTURE_TOPIC = TopicSpec("picture", "hq/picture/{picture}/{chunk}", PictureChunk, 1, True,
                          _HQ, _KIOSK)
STAFF_TOPIC = TopicSpec("staff", "hq/staff/{store}", StaffList, 1, True,
                        _HQ, _KIOSK)
CAMPAIGNS_TOPIC = TopicSpec("campaigns", "hq/campaigns", Campaigns, 1, True,
                            _HQ, _KIOSK)
# fmt: on

TOPIC_TABLE: tuple[TopicSpec, ...] = (
    STATUS_TOPIC,
    TELEMETRY_TOPIC,
    EVENTS_TOPIC,
    ACK_TOPIC,
    REPLICA_TOPIC,
    REPLICA_REQUEST_TOPIC,
    MEMBER_FETCH_TOPIC,
    MEMBER_TOPIC,
    VOUCHER_CHECK_TOPIC,
    VOUCHER_TOPIC,
    COUPON_ASK_TOPIC,
    COUPON_ANSWER_TOPIC,
    COMMAND_TOPIC,
    COMMAND_RESULT_TOPIC,
    BACKUP_TOPIC,
    BACKUP_ACK_TOPIC,
    LANE_PURCHASE_TOPIC,
    LANE_RESULT_TOPIC,
    LANE_REFUND_TOPIC,
    LANE_REFUND_RESULT_TOPIC,
    COUPON_CHECK_TOPIC,
    COUPON_RESULT_TOPIC,
    LANE_CARDS_TOPIC,
    BLOCKLIST_TOPIC,
    CATALOGUE_TOPIC,
    RULES_TOPIC,
    PICTURE_TOPIC,
    STAFF_TOPIC,
    CAMPAIGNS_TOPIC,
)

_DEVICE_LEAVES = {
    spec.pattern.removeprefix("device/{device}/"): spec
    for spec in TOPIC_TABLE
    if spec.tree == "device"
}


@dataclass(frozen=True)
class Topics:
    """Topic strings under one prefix (``mck/v1`` unless a deployment says otherwise), each
    the pattern of its :data:`TOPIC_TABLE` row with the ids filled in."""

    prefix: str = DEFAULT_PREFIX

    def topic(self, spec: TopicSpec, **ids: str) -> str:
        """The topic of one row: every id its pattern names, each checked."""
        if ids.keys() != spec.ids:
            raise ProtocolError(f"{spec.pattern} takes {sorted(spec.ids)}, not {sorted(ids)}")
        return spec.fill(self.prefix, **{name: check_name(v) for name, v in ids.items()})

    def status(self, device_id: str) -> str:
        return self.topic(STATUS_TOPIC, device=device_id)

    def telemetry(self, device_id: str) -> str:
        return self.topic(TELEMETRY_TOPIC, device=device_id)

    def events(self, device_id: str) -> str:
        return self.topic(EVENTS_TOPIC, device=device_id)

    def ack(self, device_id: str) -> str:
        return self.topic(ACK_TOPIC, device=device_id)

    def replica(self, device_id: str) -> str:
        return self.topic(REPLICA_TOPIC, device=device_id)

    def replica_request(self, device_id: str) -> str:
        return self.topic(REPLICA_REQUEST_TOPIC, device=device_id)

    def member_fetch(self, device_id: str) -> str:
        return self.topic(MEMBER_FETCH_TOPIC, device=device_id)

    def member(self, device_id: str) -> str:
        return self.topic(MEMBER_TOPIC, device=device_id)

    def voucher_check(self, device_id: str) -> str:
        return self.topic(VOUCHER_CHECK_TOPIC, device=device_id)

    def voucher(self, device_id: str) -> str:
        return self.topic(VOUCHER_TOPIC, device=device_id)

    def coupon_ask(self, device_id: str) -> str:
        return self.topic(COUPON_ASK_TOPIC, device=device_id)

    def coupon_answer(self, device_id: str) -> str:
        return self.topic(COUPON_ANSWER_TOPIC, device=device_id)

    def command(self, device_id: str) -> str:
        return self.topic(COMMAND_TOPIC, device=device_id)

    def command_result(self, device_id: str) -> str:
        return self.topic(COMMAND_RESULT_TOPIC, device=device_id)

    def backup(self, device_id: str) -> str:
        return self.topic(BACKUP_TOPIC, device=device_id)

    def backup_ack(self, device_id: str) -> str:
        return self.topic(BACKUP_ACK_TOPIC, device=device_id)

    def lane_purchase(self, store_id: str, lane_id: str) -> str:
        return self.topic(LANE_PURCHASE_TOPIC, store=store_id, lane=lane_id)

    def lane_purchase_result(self, store_id: str, lane_id: str) -> str:
        return self.topic(LANE_RESULT_TOPIC, store=store_id, lane=lane_id)

    def lane_refund(self, store_id: str, lane_id: str) -> str:
        return self.topic(LANE_REFUND_TOPIC, store=store_id, lane=lane_id)

    def lane_refund_result(self, store_id: str, lane_id: str) -> str:
        return self.topic(LANE_REFUND_RESULT_TOPIC, store=store_id, lane=lane_id)

    def lane_coupon(self, store_id: str, lane_id: str) -> str:
        return self.topic(COUPON_CHECK_TOPIC, store=store_id, lane=lane_id)

    def lane_coupon_result(self, store_id: str, lane_id: str) -> str:
        return self.topic(COUPON_RESULT_TOPIC, store=store_id, lane=lane_id)

    def lane_cards(self, store_id: str) -> str:
        return self.topic(LANE_CARDS_TOPIC, store=store_id)

    def blocklist(self) -> str:
        return self.topic(BLOCKLIST_TOPIC)

    def catalogue(self) -> str:
        return self.topic(CATALOGUE_TOPIC)

    def rules(self) -> str:
        return self.topic(RULES_TOPIC)

    def campaigns(self) -> str:
        return self.topic(CAMPAIGNS_TOPIC)

    def staff(self, store_id: str) -> str:
        return self.topic(STAFF_TOPIC, store=store_id)

    def picture(self, sha256: str, index: int) -> str:
        return self.topic(PICTURE_TOPIC, picture=sha256, chunk=str(index))

    def picture_chunks(self, sha256: str) -> str:
        """Every chunk of one picture (a subscription)."""
        return PICTURE_TOPIC.fill(self.prefix, picture=check_name(sha256))

    def is_picture(self, topic: str) -> bool:
        """Whether ``topic`` is a picture chunk's."""
        return topic.startswith(PICTURE_TOPIC.fill(self.prefix).removesuffix("+/+"))

    # Subscriptions: the ids not given are ``+``
    def all_lane_purchases(self, store_id: str) -> str:
        return LANE_PURCHASE_TOPIC.fill(self.prefix, store=check_name(store_id))

    def all_lane_refunds(self, store_id: str) -> str:
        return LANE_REFUND_TOPIC.fill(self.prefix, store=check_name(store_id))

    def all_lane_coupons(self, store_id: str) -> str:
        return COUPON_CHECK_TOPIC.fill(self.prefix, store=check_name(store_id))

    def every_device(self, leaf: str) -> str:
        """``device/+/<leaf>`` for one of the device topics (``events``, ``backup`` ...)."""
        spec = _DEVICE_LEAVES.get(leaf)
        if spec is None:
            raise ProtocolError(f"no device topic {leaf!r}")
        return spec.fill(self.prefix)

    @staticmethod
    def shared(group: str, topic_filter: str) -> str:
        """``topic_filter`` as an MQTT 5 shared subscription of ``group`` (each message goes
        to one subscriber of the group); an empty group leaves the filter as it is."""
        return f"$share/{group}/{topic_filter}" if group else topic_filter

    def parse_device_topic(self, topic: str) -> tuple[str, str] | None:
        """(device id, leaf) of a device topic, or None."""
        head = f"{self.prefix}/device/"
        if not topic.startswith(head):
            return None
        device_id, _, leaf = topic[len(head) :].partition("/")
        if not _NAME_RE.match(device_id) or not leaf:
            return None
        return device_id, leaf

    def parse_lane_topic(self, topic: str) -> tuple[str, str, str] | None:
        """(store id, lane id, leaf) of a lane topic, or None."""
        head = f"{self.prefix}/store/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) < 4 or parts[1] != "lane":
            return None
        store_id, lane_id, leaf = parts[0], parts[2], "/".join(parts[3:])
        if not (_NAME_RE.match(store_id) and _NAME_RE.match(lane_id)):
            return None
        return store_id, lane_id, leaf
