"""The appliance's tables (SQLAlchemy 2, typed). Invariants are in the schema too, not just code."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from edge.storage.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


ID = String(26)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Meta(Base):
    """Small key/value facts about this database (audit head, HQ contact, ...)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Member(Base):
    """A member. Personal data is encrypted; erased on deletion while the ledger stays.

    Phone, name and birthday are kept only as ciphertext under the device's data key; read
    and write the name and birthday through :mod:`edge.services.personal`.
    """

    __tablename__ = "member"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    phone_cipher: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_masked: Mapped[str] = mapped_column(String(16), default="")
    name_cipher: Mapped[bytes | None] = mapped_column(LargeBinary)
    birthday_cipher: Mapped[bytes | None] = mapped_column(LargeBinary)
    referrer_id: Mapped[str | None] = mapped_column(ForeignKey("member.id"))
    consent_version: Mapped[str] = mapped_column(String(32))
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The message terms (SMS reminders) agreed to, apart from the membership terms; None: not
    # agreed, or withdrawn. The phone sealed for HQ is never kept here (only in the outbox).
    message_consent_version: Mapped[str | None] = mapped_column(String(32))
    message_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tier: Mapped[str] = mapped_column(String(16))
    tier_review_at: Mapped[datetime] = mapped_column(UTCDateTime)
    balance: Mapped[int] = mapped_column(Integer, default=0)
    overdraft_flagged: Mapped[bool] = mapped_column(default=False)
    store_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A member of another store: when this store last fetched them from HQ (see
    # edge.services.remote: such a member is held here while seen here).
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Merged at HQ into this member (edge.domain.merges): its cards and lots are theirs now.
    merged_into: Mapped[str | None] = mapped_column(String(26), index=True)


class Card(Base):
    """A membership card; its number carries a check digit and comes from this device's range."""

    __tablename__ = "card"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'lost', 'blocked', 'replaced')", name="state"),
        Index("ix_card_member", "member_id"),
    )
    card_no: Mapped[str] = mapped_column(String(20), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    state: Mapped[str] = mapped_column(String(16))
    card_type: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(String(20))
    device_id: Mapped[str] = mapped_column(String(32))


class CardRange(Base):
    """The card serials this device owns; ``next_serial`` is the next one to issue."""

    __tablename__ = "card_range"
    __table_args__ = (
        CheckConstraint("next_serial >= range_start", name="next_in_range"),
        CheckConstraint("next_serial <= range_end + 1", name="next_not_past_end"),
    )
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    range_start: Mapped[int] = mapped_column(Integer)
    range_end: Mapped[int] = mapped_column(Integer)
    next_serial: Mapped[int] = mapped_column(Integer)


class PointsLot(Base):
    """Points from one accrual: spendable from ``available_at``, gone at ``expires_at``."""

    __tablename__ = "points_lot"
    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
        Index("ix_lot_member_expiry", "member_id", "expires_at"),
        Index("ix_lot_open_expiry", "expires_at", "remaining"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    points: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """One append-only movement of points. A member's balance is the sum of their entries."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint("points <> 0", name="points_nonzero"),
        Index("ix_ledger_member_time", "member_id", "created_at"),
        Index("ix_ledger_lot", "lot_id"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    kind: Mapped[str] = mapped_column(String(24))
    points: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[str | None] = mapped_column(ForeignKey("points_lot.id"))
    ref: Mapped[str] = mapped_column(String(64), default="")
    store_id: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The note of an entry HQ booked with one (a merge's), shown in the member's history.
    note: Mapped[str | None] = mapped_column(String(256))


class Purchase(Base):
    """A purchase of an identified member; the receipt id makes a re-sent receipt harmless."""

    __tablename__ = "purchase"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        Index("ix_purchase_member_time", "member_id", "at"),
    )
    receipt_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    card_no: Mapped[str] = mapped_column(String(20))
    amount_cents: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    store_id: Mapped[str] = mapped_column(String(32))


class Refund(Base):
    """Money a lane returned on a receipt, and the points that took back; the refund id makes
    a resent refund harmless."""

    __tablename__ = "refund"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("points >= 0", name="points_not_negative"),
        Index("ix_refund_receipt", "receipt_id"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    receipt_id: Mapped[str] = mapped_column(ForeignKey("purchase.receipt_id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    amount_cents: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Adjustment(Base):
    """Points credited or taken by staff, with the reason, the note and who approved it."""

    __tablename__ = "adjustment"
    __table_args__ = (
        CheckConstraint("points != 0", name="points_nonzero"),
        Index("ix_adjustment_member", "member_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(24))
    note: Mapped[str] = mapped_column(Text, default="")
    staff_id: Mapped[str] = mapped_column(String(32))
    approved_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BonusClaim(Base):
    """Once-per-period bonuses: a check-in per day, a birthday bonus per year."""

    __tablename__ = "bonus_claim"
    __table_args__ = (UniqueConstraint("member_id", "kind", "period", name="once"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    kind: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Gift(Base):
    """A gift or coupon in the catalogue. Stock can never go below zero."""

    __tablename__ = "gift"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("points_price > 0", name="price_positive"),
        CheckConstraint("kind IN ('gift', 'coupon')", name="kind"),
    )
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8), default="gift")
    points_price: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)
    low_stock: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    coupon_value_cents: Mapped[int] = mapped_column(Integer, default=0)
    coupon_valid_days: Mapped[int] = mapped_column(Integer, default=30)
    active: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the SHA-256 of its picture (edge.services.pictures), or none
    picture: Mapped[str | None] = mapped_column(String(64))


class Redemption(Base):
    """Points exchanged for a gift or coupon; the voucher code is signed by this device."""

    __tablename__ = "redemption"
    __table_args__ = (
        CheckConstraint("qty > 0", name="qty_positive"),
        Index("ix_redemption_member_sku", "member_id", "sku"),
        Index("ix_redemption_time", "created_at"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    card_no: Mapped[str] = mapped_column(String(20))
    sku: Mapped[str] = mapped_column(ForeignKey("gift.sku"))
    qty: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    voucher_code: Mapped[str] = mapped_column(Text)
    offline: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The last day (store-local) its gift voucher can be collected, as printed; None for a
    # coupon redemption, and for vouchers printed before it was kept (30 days, as printed).
    voucher_valid_until: Mapped[date | None] = mapped_column(Date)
    # When its voucher lapsed uncollected (its gift went back in stock); None while it can be
    # collected, and once it was.
    voucher_lapsed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChainRedemption(Base):
    """A gift or coupon redemption of a member held here, made at another device, as the
    replica heard of it (its ``gift.redeemed`` event, or the member's snapshot from HQ).
    Counted with this device's own redemptions against a gift's per-member limit; the id
    is the redemption id its device gave it, so hearing of it twice counts it once."""

    __tablename__ = "chain_redemption"
    __table_args__ = (
        CheckConstraint("qty > 0", name="qty_positive"),
        Index("ix_chain_redemption_member_sku", "member_id", "sku"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    sku: Mapped[str] = mapped_column(String(32))
    qty: Mapped[int] = mapped_column(Integer)
    # The device that made it ("hq" when it came in a snapshot), and when it was made (when
    # it was heard of, from a snapshot).
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherCollection(Base):
    """A gift voucher handed over at this desk (核销): one row per voucher, so a reprint,
    which carries the same code, is never collected twice here.

    ``redemption_id`` is None for a voucher another device printed: its signature cannot be
    checked here, so ``verified`` is False and HQ judges it when the event arrives.
    """

    __tablename__ = "voucher_collection"
    issuer_device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    voucher_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    redemption_id: Mapped[str | None] = mapped_column(ForeignKey("redemption.id"), unique=True)
    staff_id: Mapped[str] = mapped_column(String(32))
    verified: Mapped[bool] = mapped_column()
    offline: Mapped[bool] = mapped_column()
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Coupon(Base):
    """A single-use coupon issued by a redemption."""

    __tablename__ = "coupon"
    __table_args__ = (Index("ix_coupon_member", "member_id"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    redemption_id: Mapped[str] = mapped_column(ForeignKey("redemption.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    sku: Mapped[str] = mapped_column(String(32))
    value_cents: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_ref: Mapped[str | None] = mapped_column(String(64))


class HqCouponUse(Base):
    """A coupon of one of HQ's campaigns used at this device: HQ granted the use, or (with
    ``offline``) HQ could not be asked and the device accepted it within its offline cap.
    Its id is the key, so a coupon is used here once whatever HQ says."""

    __tablename__ = "hq_coupon_use"
    coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(24))
    kind: Mapped[str] = mapped_column(String(16))
    value_cents: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    offline: Mapped[bool] = mapped_column()
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Staff(Base):
    """A staff member; the PIN is stored only as a memory-hard hash."""

    __tablename__ = "staff"
    __table_args__ = (
        CheckConstraint("role IN ('clerk', 'supervisor', 'technician')", name="role"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), default="")
    role: Mapped[str] = mapped_column(String(16))
    pin_hash: Mapped[str] = mapped_column(String(160))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRecord(Base):
    """Hash-chained audit log: each row's hash covers the previous hash and its own fields."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_time", "at"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class OutboxEvent(Base):
    """A business event waiting for HQ's acknowledgement, written with the change it reports."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "seq"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ID, unique=True)
    kind: Mapped[str] = mapped_column(String(48))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ProcessedRequest(Base):
    """A request id already applied, with its result, so a retry returns it instead of redoing."""

    __tablename__ = "processed_request"
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    intent: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
