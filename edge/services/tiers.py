"""Tier use cases: measure the rolling period, upgrade at once, review at period end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.points import EntryKind
from edge.domain.tiers import months_after, rank, review_at_period_end, upgrade_to
from edge.services.tx import Tx, transaction
from edge.storage.models import LedgerEntry, Member, Purchase, Refund


def tier_measure(session: Session, app: AppContext, member_id: str, now: datetime) -> int:
    """Spend in cents, or points earned, over the rolling period ending ``now``."""
    since = months_after(now, -app.config.tiers.period_months)
    if app.config.tiers.basis == "spend":
        spent = select(func.coalesce(func.sum(Purchase.amount_cents), 0)).where(
            Purchase.member_id == member_id, Purchase.at > since
        )
        # money returned on those receipts was not spent
        returned = (
            select(func.coalesce(func.sum(Refund.amount_cents), 0))
            .join(Purchase, Purchase.receipt_id == Refund.receipt_id)
            .where(Purchase.member_id == member_id, Purchase.at > since)
        )
        return int(session.scalar(spent) or 0) - int(session.scalar(returned) or 0)
    else:
        stmt = select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
            LedgerEntry.member_id == member_id,
            LedgerEntry.kind.in_(EntryKind.EARNING | {EntryKind.REFUND}),
            LedgerEntry.created_at > since,
        )
    return int(session.scalar(stmt) or 0)


def upgrade_if_earned(tx: Tx, member: Member) -> str | None:
    """Moves the member up at once when the rolling measure reaches a higher tier."""
    measure = tier_measure(tx.session, tx.app, member.id, tx.now)
    target = upgrade_to(member.tier, measure, tx.app.ladder)
    if target is None:
        return None
    before = member.tier
    member.tier = target.code
    member.tier_review_at = months_after(tx.now, tx.app.config.tiers.period_months)
    tx.audit("system", "tier.upgrade", member.id, before=before, after=target.code, measure=measure)
    tx.emit(
        "member.tier_changed",
        {"member_id": member.id, "before": before, "after": target.code, "measure": measure},
    )
    return target.code


@dataclass(frozen=True)
class TierReview:
    reviewed: int
    downgraded: int
    upgraded: int


def review_tiers(app: AppContext, batch: int = 500) -> TierReview:
    """At the end of each member's tier period, sets the tier the period earned (may go down)."""
    reviewed = downgraded = upgraded = 0
    while True:
        with transaction(app) as tx:
            due = list(
                tx.session.scalars(
                    select(Member)
                    .where(Member.tier_review_at <= tx.now, Member.deleted_at.is_(None))
                    .limit(batch)
                )
            )
            for member in due:
                measure = tier_measure(tx.session, app, member.id, tx.now)
                target = review_at_period_end(measure, app.ladder)
                before = member.tier
                member.tier_review_at = months_after(tx.now, app.config.tiers.period_months)
                reviewed += 1
                if target.code != before:
                    member.tier = target.code
                    went_down = rank(target.code, app.ladder) < rank(before, app.ladder)
                    downgraded += went_down
                    upgraded += not went_down
                    tx.audit(
                        "system",
                        "tier.review",
                        member.id,
                        before=before,
                        after=target.code,
                        measure=measure,
                    )
                    tx.emit(
                        "member.tier_changed",
                        {
                            "member_id": member.id,
                            "before": before,
                            "after": target.code,
                            "measure": measure,
                        },
                    )
        if len(due) < batch:
            return TierReview(reviewed, downgraded, upgraded)
