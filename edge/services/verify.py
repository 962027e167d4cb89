"""``kiosk ledger verify``: every invariant of the stored data, checked from scratch."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from edge.app import AppContext
from edge.domain.cards import CardState, parse_card_number
from edge.domain.errors import KioskError
from edge.security.chain import GENESIS, chain_hash
from edge.services.tx import AUDIT_HEAD, audit_fields, get_meta
from edge.storage.models import (
    Adjustment,
    AuditRecord,
    Card,
    Gift,
    LedgerEntry,
    Member,
    PointsLot,
    ProcessedRequest,
    Purchase,
    Redemption,
    Refund,
)


@dataclass
class VerifyReport:
    ok: bool = True
    members: int = 0
    entries: int = 0
    lots: int = 0
    audit_records: int = 0
    problems: list[str] = field(default_factory=list)

    def breach(self, what: str) -> None:
        self.ok = False
        if len(self.problems) < 200:
            self.problems.append(what)


def verify_ledger(app: AppContext) -> VerifyReport:
    """Checks balances, lots, stock, cards and the audit chain; never changes anything."""
    report = VerifyReport()
    with app.db.read() as s:
        report.members = s.scalar(select(func.count()).select_from(Member)) or 0
        report.entries = s.scalar(select(func.count()).select_from(LedgerEntry)) or 0
        report.lots = s.scalar(select(func.count()).select_from(PointsLot)) or 0
        sums = (
            select(LedgerEntry.member_id, func.sum(LedgerEntry.points).label("total"))
            .group_by(LedgerEntry.member_id)
            .subquery()
        )
        for member_id, balance, total, _flagged in s.execute(
            select(
                Member.id, Member.balance, func.coalesce(sums.c.total, 0), Member.overdraft_flagged
            )
            .outerjoin(sums, sums.c.member_id == Member.id)
            .where(
                (Member.balance != func.coalesce(sums.c.total, 0))
                | ((Member.balance < 0) & Member.overdraft_flagged.is_(False))
            )
        ):
            if balance != total:
                report.breach(f"member {member_id}: balance {balance} != ledger sum {total}")
            else:
                report.breach(f"member {member_id}: negative balance {balance} not flagged")
        per_lot = (
            select(
                LedgerEntry.lot_id,
                func.sum(LedgerEntry.points).label("net"),
                func.sum(func.max(LedgerEntry.points, 0)).label("credited"),
            )
            .where(LedgerEntry.lot_id.is_not(None))
            .group_by(LedgerEntry.lot_id)
            .subquery()
        )
        for lot_id, points, remaining, net, credited in s.execute(
            select(
                PointsLot.id,
                PointsLot.points,
                PointsLot.remaining,
                per_lot.c.net,
                per_lot.c.credited,
            )
            .outerjoin(per_lot, per_lot.c.lot_id == PointsLot.id)
            .where(
                (func.coalesce(per_lot.c.net, -1) != PointsLot.remaining)
                | (func.coalesce(per_lot.c.credited, -1) != PointsLot.points)
            )
        ):
            report.breach(
                f"lot {lot_id}: points {points}, remaining {remaining}, "
                f"entries credit {credited} and net {net}"
            )
        _verify_purchases_and_redemptions(s, report)
        for sku, stock in s.execute(select(Gift.sku, Gift.stock).where(Gift.stock < 0)):
            report.breach(f"gift {sku}: negative stock {stock}")
        # One active card per member, and one more for each record merged into them at HQ
        # (edge.domain.merges), directly or through a record merged on in its turn.
        allowed = _merged_records(s)
        for member_id, n in s.execute(
            select(Card.member_id, func.count())
            .where(Card.state == CardState.ACTIVE)
            .group_by(Card.member_id)
            .having(func.count() > 1)
        ):
            if n > 1 + allowed.get(member_id, 0):
                report.breach(f"member {member_id}: {n} active cards")
        for (card_no,) in s.execute(select(Card.card_no)):
            try:
                parse_card_number(card_no)
            except KioskError:
                report.breach(f"card {card_no}: bad check digit")
        verify_audit(s, report)
        if app.db.engine.dialect.name == "sqlite":
            check = s.execute(text("PRAGMA integrity_check")).scalar()
            if check != "ok":
                report.breach(f"SQLite integrity check: {check}")
    return report


def _merged_records(s: Session) -> dict[str, int]:
    """How many records were merged into each member, following merges of merges."""
    into = {
        member_id: kept
        for member_id, kept in s.execute(
            select(Member.id, Member.merged_into).where(Member.merged_into.is_not(None))
        ).tuples()
        if kept is not None
    }
    counts: dict[str, int] = {}
    for first in into.values():
        kept = first
        for _ in range(len(into)):  # a chain of merges is at most as long as their number
            if kept not in into:
                break
            kept = into[kept]
        counts[kept] = counts.get(kept, 0) + 1
    return counts


def _points_by_ref(kind: str) -> Subquery:
    """The points entries of ``kind`` move, summed by their ref (the receipt, redemption,
    refund or adjustment they belong to)."""
    return (
        select(LedgerEntry.ref, func.sum(LedgerEntry.points).label("points"))
        .where(LedgerEntry.kind == kind)
        .group_by(LedgerEntry.ref)
        .subquery()
    )


def _verify_purchases_and_redemptions(s: Session, report: VerifyReport) -> None:
    """Every purchase has its credit and every redemption its debits, no more and no less."""
    credits = _points_by_ref("purchase")
    for receipt_id, points, credited in s.execute(
        select(Purchase.receipt_id, Purchase.points, credits.c.points)
        .outerjoin(credits, credits.c.ref == Purchase.receipt_id)
        .where(func.coalesce(credits.c.points, 0) != Purchase.points)
    ):
        report.breach(f"purchase {receipt_id}: {points} points earned, ledger credits {credited}")
    debits = _points_by_ref("redemption")
    for redemption_id, points, debited in s.execute(
        select(Redemption.id, Redemption.points, debits.c.points)
        .outerjoin(debits, debits.c.ref == Redemption.id)
        .where(func.coalesce(debits.c.points, 0) != -Redemption.points)
    ):
        report.breach(f"redemption {redemption_id}: {points} points, ledger debits {debited}")
    _verify_corrections(s, report)
    for (request_id,) in s.execute(
        select(ProcessedRequest.request_id).where(
            ProcessedRequest.intent == "redeem",
            ~select(Redemption.id)
            .where(Redemption.id == func.json_extract(ProcessedRequest.result, "$.key"))
            .exists(),
        )
    ):
        report.breach(f"request {request_id}: recorded as applied but its redemption is missing")


def _verify_corrections(s: Session, report: VerifyReport) -> None:
    """Every refund and adjustment has its entries, and no receipt is refunded beyond its
    amount."""
    taken = _points_by_ref("refund")
    for refund_id, points, booked in s.execute(
        select(Refund.id, Refund.points, taken.c.points)
        .outerjoin(taken, taken.c.ref == Refund.id)
        .where(func.coalesce(taken.c.points, 0) != -Refund.points)
    ):
        report.breach(f"refund {refund_id}: {points} points taken back, ledger debits {booked}")
    for receipt_id, amount, refunded in s.execute(
        select(Purchase.receipt_id, Purchase.amount_cents, func.sum(Refund.amount_cents))
        .join(Refund, Refund.receipt_id == Purchase.receipt_id)
        .group_by(Purchase.receipt_id, Purchase.amount_cents)
        .having(func.sum(Refund.amount_cents) > Purchase.amount_cents)
    ):
        report.breach(f"purchase {receipt_id}: {refunded} cents refunded of {amount}")
    moved = _points_by_ref("adjustment")
    for adjustment_id, points, booked in s.execute(
        select(Adjustment.id, Adjustment.points, moved.c.points)
        .outerjoin(moved, moved.c.ref == Adjustment.reason + ":" + Adjustment.id)
        .where(func.coalesce(moved.c.points, 0) != Adjustment.points)
    ):
        report.breach(f"adjustment {adjustment_id}: {points} points, ledger moves {booked}")


def verify_audit(s: Session, report: VerifyReport) -> None:
    """The audit chain link by link, and its head; each break is a breach in ``report``."""
    prev = GENESIS
    count = 0
    for row in s.execute(
        select(
            AuditRecord.seq,
            AuditRecord.at,
            AuditRecord.actor,
            AuditRecord.action,
            AuditRecord.subject,
            AuditRecord.detail,
            AuditRecord.prev_hash,
            AuditRecord.hash,
        ).order_by(AuditRecord.seq)
    ).yield_per(5000):
        count += 1
        expected = chain_hash(
            prev, audit_fields(row.at, row.actor, row.action, row.subject, row.detail)
        )
        if row.prev_hash != prev:
            report.breach(f"audit #{row.seq}: previous record missing or changed")
        elif row.hash != expected:
            report.breach(f"audit #{row.seq}: record was altered")
        prev = row.hash
    report.audit_records = count
    head = get_meta(s, AUDIT_HEAD)
    if (head or GENESIS) != prev:
        report.breach("audit log: latest records were removed (chain head does not match)")
