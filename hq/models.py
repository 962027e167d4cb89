"""HQ's tables: the central ledger, members and cards, the fleet, alerts, enrolment (SQLAlchemy 2).

SQLite by default, PostgreSQL by URL; times are stored as UTC and come back UTC-aware on both.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from edge.storage.types import UTCDateTime


class HqBase(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class StoredEvent(HqBase):
    """Every business event exactly once, numbered in the order HQ stored it (``hq_seq``)."""

    __tablename__ = "hq_event"
    __table_args__ = (Index("ix_hq_event_device_seq", "device_id", "device_seq"),)
    hq_seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    event_id: Mapped[str] = mapped_column(String(26), unique=True)
    device_id: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(64))
    device_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    kind: Mapped[str] = mapped_column(String(48))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChainCounter(HqBase):
    """The chain's event numbering (``hq_seq``): one row, ``value`` the last number given.

    A writer takes its numbers last in its transaction with one UPDATE, which keeps the row
    locked until it commits: numbers are committed in the order they are given, a rolled
    back transaction gives its numbers back, and a reader never sees a number before a
    smaller one (so a replica cursor never passes an event still being stored).
    """

    __tablename__ = "hq_counter"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


EVENT_COUNTER = "event"


class DeviceSequence(HqBase):
    """The next outbox seq HQ expects from a device: its events are stored in that order only.

    Every seq up to ``next_seq - 1`` is either a stored event or a quarantined one, so a gap
    in a device's events is never silent.
    """

    __tablename__ = "hq_device_seq"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuarantinedEvent(HqBase):
    """An event HQ could not apply (bad data): kept for staff, acknowledged so it stops coming."""

    __tablename__ = "hq_quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(256))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CentralMember(HqBase):
    """A member as the chain sees it: balance = sum of all stores' entries."""

    __tablename__ = "hq_member"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    phone_masked: Mapped[str] = mapped_column(String(16), default="")
    balance: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    overdraft_flagged: Mapped[bool] = mapped_column(default=False)
    deleted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Known to HQ for members brought in from the chain's earlier system (kiosk hq import):
    # the phone sealed with HQ's data key and hashed with the chain's lookup key, as the
    # kiosks keep it, and what the perks need.
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The name and birthday sealed with HQ's data key too (read them through hq.personal);
    # the birthday's month in clear for the campaigns' "birthday this month" audience.
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    birthday_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    birth_month: Mapped[int | None] = mapped_column(SmallInteger)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    # Consent to messages (reminders), apart from the membership terms: the version of the
    # message terms agreed to; None: never given, or withdrawn (message_consent_at says when).
    message_consent_version: Mapped[str | None] = mapped_column(String(32))
    message_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Merged at HQ into this member (hq.merges): its cards, lots and coupons are theirs now.
    merged_into: Mapped[str | None] = mapped_column(String(26), index=True)


class CentralLot(HqBase):
    """Points a member holds with their expiry, where HQ made the credit (an opening balance
    brought in by ``kiosk hq import``); each has its ledger entry with the same ``lot_id``."""

    __tablename__ = "hq_lot"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26), index=True)
    points: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(26))  # the import that made it


class MemberImport(HqBase):
    """One CSV export brought in, by its SHA-256: how far it got, so a second run of the same
    file resumes (or, when finished, changes nothing)."""

    __tablename__ = "hq_import"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(String(256))
    lines_done: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    points: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    expired_points: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), default=0
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImportRefusal(HqBase):
    """A row of an import that was not brought in, and why."""

    __tablename__ = "hq_import_refusal"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(String(26), index=True)
    line: Mapped[int] = mapped_column(Integer)
    card_no: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(256))


class CentralCard(HqBase):
    __tablename__ = "hq_card"
    card_no: Mapped[str] = mapped_column(String(20), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26), index=True)
    state: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[str] = mapped_column(String(64))


class CentralEntry(HqBase):
    """A ledger entry of any store, with the id its device gave it."""

    __tablename__ = "hq_entry"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    points: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[str | None] = mapped_column(String(26))
    ref: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[str] = mapped_column(String(26))
    # A credit's lot dates, so a member's snapshot rebuilds the lot (NULL before hq_0004).
    available_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The member's tier when HQ stored the entry, which the reports count it under (NULL
    # before hq_0018: the member's tier then stands for it, see hq.rollups).
    tier: Mapped[str | None] = mapped_column(String(16))


class CardUse(HqBase):
    """Where and when a card was last used (for the anti-cloning check)."""

    __tablename__ = "hq_card_use"
    card_no: Mapped[str] = mapped_column(String(20), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherCollection(HqBase):
    """The first collection HQ heard of for each gift voucher (keyed by the device that
    printed it and its id): a second one raises ``voucher_collected_twice``. A collection
    HQ granted a kiosk on its ``voucher/request`` (a claim) has no ``event_id`` until that
    kiosk's ``gift.collected`` event arrives."""

    __tablename__ = "hq_voucher_collection"
    issuer_device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    voucher_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(26))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class GiftVoucher(HqBase):
    """Each gift voucher a kiosk printed, as its ``gift.redeemed`` event told HQ (keyed like
    :class:`VoucherCollection`; the voucher id is the redemption id), so that another store
    can check it (``voucher/request``)."""

    __tablename__ = "hq_gift_voucher"
    issuer_device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    voucher_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(26))
    card_no: Mapped[str] = mapped_column(String(20), default="")
    sku: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256), default="")
    qty: Mapped[int] = mapped_column(Integer)
    valid_until: Mapped[date | None] = mapped_column(Date)
    event_id: Mapped[str] = mapped_column(String(26))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class FleetDevice(HqBase):
    """The latest status and telemetry of one device."""

    __tablename__ = "hq_device"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16), default="kiosk")
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str] = mapped_column(String(64), default="")
    outbox_depth: Mapped[int | None] = mapped_column(Integer)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    telemetry: Mapped[str] = mapped_column(Text, default="{}")
    faults: Mapped[str] = mapped_column(Text, default="[]")
    # What the device's replica follows: "store" (its store's feed), or "chain" (every event
    # of the chain, for a kiosk of protocol 1.0 until it is updated).
    replica_feed: Mapped[str] = mapped_column(String(8), default="chain", server_default="chain")
    # Whether its replica reads a member snapshot's redemptions (it says so when it asks for
    # its feed); a kiosk from before them is sent snapshots without them.
    reads_redemptions: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The worst health of its parts in its last telemetry (ok, degraded, failed; unknown
    # before any), and when its newest backup HQ holds was made: the fleet page's filters
    # and figures, without reading every device's telemetry or backups.
    health: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    last_backup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Alert(HqBase):
    """Something HQ staff must look at; open until ``cleared_at``."""

    __tablename__ = "hq_alert"
    # One open alert per kind and subject, however many HQ workers raise it at once.
    __table_args__ = (
        Index(
            "uq_hq_alert_open",
            "kind",
            "subject",
            unique=True,
            postgresql_where=text("cleared_at IS NULL"),
            sqlite_where=text("cleared_at IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(96))
    store_id: Mapped[str] = mapped_column(String(64), default="")
    device_id: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Someone at HQ has seen it (the console's acknowledge, with a note); it stays open until
    # what it is about is cleared.
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    ack_note: Mapped[str | None] = mapped_column(Text)


class EnrolledDevice(HqBase):
    """A device HQ's enrolment desk has registered: its identity, store and card range.

    ``state`` is ``active``, ``revoked`` (its certificate is on the revocation list) or
    ``retired`` (moved to another device id, or replaced by another device).
    """

    __tablename__ = "hq_enrolled_device"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    card_range_start: Mapped[int] = mapped_column(BigInteger)
    card_range_end: Mapped[int] = mapped_column(BigInteger)
    certificate_serial: Mapped[str] = mapped_column(String(48))
    certificate_expires: Mapped[datetime] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    successor: Mapped[str] = mapped_column(String(64), default="")


class CardRange(HqBase):
    """A block of card serials owned by one device; blocks never overlap and are never reused."""

    __tablename__ = "hq_card_range"
    range_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    range_end: Mapped[int] = mapped_column(BigInteger, unique=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    allocated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UsedPairingCode(HqBase):
    """A pairing slip HQ has answered: a code is good for one bundle only."""

    __tablename__ = "hq_pairing_used"
    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RevokedCertificate(HqBase):
    """A device certificate the broker must refuse (written to the CRL)."""

    __tablename__ = "hq_revoked_certificate"
    certificate_serial: Mapped[str] = mapped_column(String(48), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(256))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EnrolmentAction(HqBase):
    """Everything the enrolment desk did: enrol, move, replace, revoke."""

    __tablename__ = "hq_enrolment_action"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    store_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")


class MemberHolder(HqBase):
    """A store that holds a member: their home store, a store where their points moved, or
    one that fetched them. HQ sends a member's changes to the stores that hold them.

    ``seen_at`` is the last time the member's points moved at the store or the store fetched
    them (renewed at most daily); a store other than the home store stops holding a member
    it has not seen for HQ's ``hold_months`` (:func:`hq.feeds.release_unseen`)."""

    __tablename__ = "hq_member_store"
    __table_args__ = (
        Index("ix_hq_member_store_store_id", "store_id"),
        Index("ix_hq_member_store_seen_at", "seen_at"),
    )
    member_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedHead(HqBase):
    """The last number of a store's feed. Taken last in a writer's transaction, like the
    chain's counter, so feed items commit in order with no gap."""

    __tablename__ = "hq_feed_head"
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class FeedItem(HqBase):
    """One item of a store's feed: a stored event (``hq_seq``) or a member to send whole
    (``member_id``, snapshotted when it is sent)."""

    __tablename__ = "hq_feed"
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    feed_seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hq_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    member_id: Mapped[str | None] = mapped_column(String(26))


class HqStaffAccount(HqBase):
    """A staff account of one store, kept by HQ: the PIN only as its scrypt hash (hashed at
    HQ, never stored or sent in clear), pushed to the store's kiosks in its staff list."""

    __tablename__ = "hq_staff"
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), default="")
    role: Mapped[str] = mapped_column(String(16))
    pin_hash: Mapped[str] = mapped_column(String(160))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HqStaffList(HqBase):
    """The version of one store's staff list: one more on every change to its accounts."""

    __tablename__ = "hq_staff_list"
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HqStaffChange(HqBase):
    """Every change HQ made to a staff account: who, what, when, and the list version it made.
    Never a PIN or its hash."""

    __tablename__ = "hq_staff_change"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    store_id: Mapped[str] = mapped_column(String(64), index=True)
    staff_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="{}")


class Campaign(HqBase):
    """A coupon campaign (coupon template): what its coupons give, when they can be used,
    who gets them, and how many (``pool_total`` in all, ``issued`` so far, at most
    ``per_member_limit`` a member). ``finished_at`` when HQ ended it before its time."""

    __tablename__ = "hq_campaign"
    campaign_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    value_cents: Mapped[int] = mapped_column(Integer, default=0)
    threshold_cents: Mapped[int] = mapped_column(Integer, default=0)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    gift_sku: Mapped[str] = mapped_column(String(32), default="")
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    audience: Mapped[str] = mapped_column(String(16))
    audience_tier: Mapped[str | None] = mapped_column(String(16))
    pool_total: Mapped[int] = mapped_column(Integer)
    per_member_limit: Mapped[int] = mapped_column(Integer)
    issued: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_by: Mapped[str | None] = mapped_column(String(64))


class CampaignCoupon(HqBase):
    """One coupon of a campaign in a member's wallet. Its code is HQ's signature over its id,
    made again whenever it is shown (Ed25519 signs the same id the same way). Used once in
    the whole chain: the first use HQ hears of is kept here; a second raises
    ``coupon_used_twice``."""

    __tablename__ = "hq_coupon"
    __table_args__ = (
        Index("ix_hq_coupon_member", "member_id", "campaign_id"),
        Index("ix_hq_coupon_campaign", "campaign_id", "member_id"),
    )
    coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(24))
    member_id: Mapped[str] = mapped_column(String(26))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_store_id: Mapped[str | None] = mapped_column(String(64))
    used_device_id: Mapped[str | None] = mapped_column(String(64))
    used_ref: Mapped[str | None] = mapped_column(String(64))
    used_offline: Mapped[bool] = mapped_column(default=False)


class DeviceKey(HqBase):
    """A public key a device signs its vouchers and coupons with, as its telemetry told HQ
    (on the device's own topic, under its certificate). A device given a new key keeps its
    old ones here, so what it printed before still checks."""

    __tablename__ = "hq_device_key"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeviceCoupon(HqBase):
    """A coupon a kiosk printed for points (from its ``gift.redeemed`` event): worth
    ``value_cents`` until ``expires_at``, used once in the whole chain, like a campaign's."""

    __tablename__ = "hq_device_coupon"
    issuer_device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26))
    sku: Mapped[str] = mapped_column(String(32))
    value_cents: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_store_id: Mapped[str | None] = mapped_column(String(64))
    used_device_id: Mapped[str | None] = mapped_column(String(64))
    used_ref: Mapped[str | None] = mapped_column(String(64))
    used_offline: Mapped[bool] = mapped_column(default=False)


class MemberMerge(HqBase):
    """A merge of two member records of one person (hq.merges): HQ's record of it, with the
    two members as they were before and after. A record is absorbed once."""

    __tablename__ = "hq_member_merge"
    merge_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kept_member_id: Mapped[str] = mapped_column(String(26), index=True)
    absorbed_member_id: Mapped[str] = mapped_column(String(26), index=True, unique=True)
    points: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    old_cards: Mapped[str] = mapped_column(String(8))  # keep or block
    note: Mapped[str] = mapped_column(String(256))
    actor: Mapped[str] = mapped_column(String(64))
    before: Mapped[str] = mapped_column(Text)  # JSON: both members before
    after: Mapped[str] = mapped_column(Text)  # JSON: both members after


_ID = BigInteger().with_variant(Integer, "sqlite")


class AuditRecord(HqBase):
    """One action taken at HQ, from the console or a command: who, what, when, before, after.

    Written in the transaction of the change it records (hq.audit.record)."""

    __tablename__ = "hq_audit"
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))  # web or cli
    action: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(String(128))
    store_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[str] = mapped_column(Text)  # JSON, "null" when nothing was there
    after: Mapped[str] = mapped_column(Text)


class WebAccount(HqBase):
    """An HQ staff member's console account (hq.accounts); the password only as a hash."""

    __tablename__ = "hq_web_account"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column()
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebSession(HqBase):
    """A signed-in console session: only the hash of its cookie's token is kept."""

    __tablename__ = "hq_web_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    address: Mapped[str] = mapped_column(String(64))


class TelemetrySample(HqBase):
    """The chartable figures of one telemetry message, kept for a while (hq.fleet)."""

    __tablename__ = "hq_telemetry"
    __table_args__ = (Index("ix_hq_telemetry_device_at", "device_id", "at"),)
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    sample: Mapped[str] = mapped_column(Text)  # JSON


class HqAdjustment(HqBase):
    """Points adjusted at HQ's members desk: applied at once within the desk's limit, else
    pending until a supervisor approves (or rejects) it (hq.member_desk)."""

    __tablename__ = "hq_adjustment"
    adjustment_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26), index=True)
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, applied, rejected
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DocumentVersion(HqBase):
    """Every version of a document HQ publishes to every kiosk (``kind``: ``catalogue`` or
    ``rules``), numbered by HQ (hq.catalogue): the whole document as JSON, unsigned (it is
    signed when published), who made it, when and why. ``published_at`` stays empty until the
    broker took it: the newest unpublished one is published again later."""

    __tablename__ = "hq_document_version"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(256))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GiftPicture(HqBase):
    """A gift's picture file, kept once by its SHA-256 whichever gifts and versions name it."""

    __tablename__ = "hq_picture"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(String(64))


class GiftStock(HqBase):
    """A gift's stock at one kiosk as its events told HQ (hq.stock): the figure of its last
    ``gift.stock``, ``gift.changed`` or ``alert.low_stock`` event, less the redemptions
    since. Each kiosk keeps its own stock; ``at`` is when the kiosk's figure last moved."""

    __tablename__ = "hq_gift_stock"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), index=True)
    stock: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[str] = mapped_column(String(26))


class UpdateBundle(HqBase):
    """A signed update bundle uploaded to HQ (hq.rollouts), kept as ``<sha256>.bundle`` in
    HQ's bundles folder, where the web console serves it to the devices."""

    __tablename__ = "hq_bundle"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    file_name: Mapped[str] = mapped_column(String(256))
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rollout(HqBase):
    """One bundle on its way to a ring of kiosks, a few at a time (hq.rollouts).

    ``state``: running, halted (by hand, or by itself when failures passed
    ``max_failure_pct`` of at least ``min_attempts`` devices counted since ``counted_from``),
    finished (every device has its verdict) or cancelled. ``ring`` is the widest ring asked
    for so far."""

    __tablename__ = "hq_rollout"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bundle_sha256: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    ring: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16), index=True)
    max_failure_pct: Mapped[int] = mapped_column(Integer)
    min_attempts: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[int] = mapped_column(Integer)
    offline_limit_s: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    counted_from: Mapped[datetime] = mapped_column(UTCDateTime)
    stepped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    halted_reason: Mapped[str] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RolloutDevice(HqBase):
    """A kiosk of a rollout: pending, sent (its ``update`` command, ``transaction_id``),
    installed, failed or skipped (``reason`` says why), with the device's answer."""

    __tablename__ = "hq_rollout_device"
    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64))
    ring: Mapped[str] = mapped_column(String(80))  # the ring that added it
    state: Mapped[str] = mapped_column(String(16), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_version: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result_status: Mapped[str | None] = mapped_column(String(16))
    result_detail: Mapped[str | None] = mapped_column(Text)
    result_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)


class _PointsByKind:
    """The points booked by each kind of ledger entry, summed as booked (a debit negative),
    and how many entries (all of them, and the check-ins): :mod:`hq.rollups` keeps them."""

    entries: Mapped[int] = mapped_column(_ID, default=0)
    checkins: Mapped[int] = mapped_column(_ID, default=0)
    purchase: Mapped[int] = mapped_column(_ID, default=0)
    checkin: Mapped[int] = mapped_column(_ID, default=0)
    birthday: Mapped[int] = mapped_column(_ID, default=0)
    referral: Mapped[int] = mapped_column(_ID, default=0)
    redemption: Mapped[int] = mapped_column(_ID, default=0)
    expiry: Mapped[int] = mapped_column(_ID, default=0)
    refund: Mapped[int] = mapped_column(_ID, default=0)
    adjustment: Mapped[int] = mapped_column(_ID, default=0)
    voucher_return: Mapped[int] = mapped_column(_ID, default=0)
    opening: Mapped[int] = mapped_column(_ID, default=0)
    merge_in: Mapped[int] = mapped_column(_ID, default=0)
    merge_out: Mapped[int] = mapped_column(_ID, default=0)
    other: Mapped[int] = mapped_column(_ID, default=0)  # a kind not listed above


class PointsRollup(_PointsByKind, HqBase):
    """The ledger's entries of one UTC day, store and member tier, summed by kind; kept in
    the transaction that stores them (hq.rollups)."""

    __tablename__ = "hq_rollup_points"
    __table_args__ = (Index("ix_hq_rollup_points_store_day", "store_id", "day"),)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)


class PointsMonthRollup(_PointsByKind, HqBase):
    """:class:`PointsRollup` of a whole month (``month``, its first day): the reports by
    store over months read a thirtieth of the rows."""

    __tablename__ = "hq_rollup_points_month"
    __table_args__ = (Index("ix_hq_rollup_points_month_store_month", "store_id", "month"),)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)


class ChainPointsRollup(_PointsByKind, HqBase):
    """:class:`PointsRollup` of the whole chain: one row a day and tier, for the reports
    over every store."""

    __tablename__ = "hq_rollup_points_chain"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)


class _GiftFigures:
    """Gift redemptions (``gift.redeemed``): how many, the quantity, the points they took;
    their vouchers that lapsed (``gift.voucher_lapsed``) and the points given back. ``name``
    is one the gift had (the greatest)."""

    name: Mapped[str] = mapped_column(String(256), default="")
    redemptions: Mapped[int] = mapped_column(_ID, default=0)
    quantity: Mapped[int] = mapped_column(_ID, default=0)
    points: Mapped[int] = mapped_column(_ID, default=0)
    lapsed: Mapped[int] = mapped_column(_ID, default=0)
    returned: Mapped[int] = mapped_column(_ID, default=0)


class GiftRollup(_GiftFigures, HqBase):
    """The gift redemptions of one UTC day, store and gift or coupon (sku)."""

    __tablename__ = "hq_rollup_gift"
    __table_args__ = (Index("ix_hq_rollup_gift_store_day", "store_id", "day"),)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)


class GiftMonthRollup(_GiftFigures, HqBase):
    """:class:`GiftRollup` of a whole month (``month``, its first day)."""

    __tablename__ = "hq_rollup_gift_month"
    __table_args__ = (Index("ix_hq_rollup_gift_month_store_month", "store_id", "month"),)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)


class ChainGiftRollup(_GiftFigures, HqBase):
    """:class:`GiftRollup` of the whole chain: one row a day and sku."""

    __tablename__ = "hq_rollup_gift_chain"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)


class MemberRollup(HqBase):
    """Members who joined the chain on one UTC day at their home store (registered, or
    imported), and members who departed (erased on request, or merged into another)."""

    __tablename__ = "hq_rollup_member"
    __table_args__ = (Index("ix_hq_rollup_member_store_day", "store_id", "day"),)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    joined: Mapped[int] = mapped_column(_ID, default=0)
    departed: Mapped[int] = mapped_column(_ID, default=0)


class ChainMemberRollup(HqBase):
    """:class:`MemberRollup` of the whole chain: one row a day."""

    __tablename__ = "hq_rollup_member_chain"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    joined: Mapped[int] = mapped_column(_ID, default=0)
    departed: Mapped[int] = mapped_column(_ID, default=0)


class HqMessage(HqBase):
    """A message to a member (a sign-in code, a reminder) and how its sending ended.

    ``phone_enc`` (HQ's data key) is kept only until the message is sent or given up;
    ``phone_masked`` stays for the record. ``dedupe_key`` makes a reminder once per what it
    reminds of. ``status``: queued, sent, failed (given up after its tries), cancelled.
    """

    __tablename__ = "hq_message"
    __table_args__ = (Index("ix_hq_message_status_due", "status", "due_at"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    member_id: Mapped[str | None] = mapped_column(String(26), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    phone_masked: Mapped[str] = mapped_column(String(16))
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    body: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(96), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sender: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(256))


class MemberOtp(HqBase):
    """A one-time sign-in code sent to a member's phone: only its hash is kept; it expires
    and is used once. Asking for a new code ends the ones before it."""

    __tablename__ = "hq_member_otp"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    member_id: Mapped[str] = mapped_column(String(26))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MemberSignIn(HqBase):
    """One phone number's sign-in state (by its lookup hash): wrong codes in a row and the
    lockout they brought."""

    __tablename__ = "hq_member_signin"
    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MemberSignInRequest(HqBase):
    """A sign-in code asked for, by number and client address: what the rate limits count."""

    __tablename__ = "hq_member_signin_request"
    __table_args__ = (
        Index("ix_hq_member_signin_request_phone", "phone_hash", "at"),
        Index("ix_hq_member_signin_request_address", "address", "at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone_hash: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberSession(HqBase):
    """A member signed in on the member page (apart from the staff's sessions): only the
    hash of its cookie's token is kept."""

    __tablename__ = "hq_member_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(26), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    address: Mapped[str] = mapped_column(String(64))
