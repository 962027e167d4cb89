"""What the agent does with each inbound message: lanes' purchases and coupons, HQ's pushes.

Every applier is idempotent by the message's own id (receipt id, update id, catalogue and
rules versions), refuses what has expired, and applies all of a message or none of it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.cards import CardState
from edge.domain.errors import KioskError
from edge.protocol import (
    BlocklistUpdate,
    Catalogue,
    CouponCheck,
    CouponCheckResult,
    LanePurchase,
    LanePurchaseResult,
    Rules,
)
from edge.security.codes import verify_voucher, voucher_device_id
from edge.services.gifts import use_coupon
from edge.services.points import accrue_purchase
from edge.services.tx import get_meta, set_meta, transaction
from edge.storage.models import Card, Coupon, Gift
from edge.storage.sync_models import InboundMessage

log = logging.getLogger(__name__)

CATALOGUE_VERSION = "catalogue_version"
RULES_VERSION = "rules_version"
HQ_RULES = "hq_rules"


def accrue_lane_purchase(app: AppContext, purchase: LanePurchase) -> LanePurchaseResult:
    """A lane's purchase becomes an accrual; a resent receipt returns the first result."""
    try:
        accrual = accrue_purchase(
            app,
            purchase.card_no,
            purchase.amount_cents,
            purchase.receipt_id,
            actor=f"lane:{purchase.lane_id}",
        )
    except KioskError as exc:
        return LanePurchaseResult(receipt_id=purchase.receipt_id, ok=False, error=exc.code)
    return LanePurchaseResult(
        receipt_id=purchase.receipt_id,
        ok=True,
        points=accrual.points,
        balance=accrual.balance,
        duplicate=accrual.duplicate,
    )


def check_coupon(app: AppContext, check: CouponCheck) -> CouponCheckResult:
    """Validates a printed coupon for a lane, and spends it when the lane asks to."""
    try:
        if check.use:
            used = use_coupon(
                app, check.code, check.ref or check.transaction, actor=f"lane:{check.lane_id}"
            )
            return CouponCheckResult(
                transaction=check.transaction,
                ok=True,
                coupon_id=used.coupon_id,
                sku=used.sku,
                value_cents=used.value_cents,
            )
        if voucher_device_id(check.code) != app.device_id:
            return CouponCheckResult(transaction=check.transaction, ok=False, error="foreign")
        claims = verify_voucher(app.keys.device_signing_key.public_key(), check.code)
        with app.db.read() as session:
            coupon = session.get(Coupon, claims.voucher_id)
            if coupon is None or claims.kind != "coupon":
                return CouponCheckResult(
                    transaction=check.transaction, ok=False, error="unknown_coupon"
                )
            if coupon.used_at is not None:
                error = "coupon_used"
            elif coupon.expires_at <= app.clock():
                error = "coupon_expired"
            else:
                error = ""
            return CouponCheckResult(
                transaction=check.transaction,
                ok=not error,
                coupon_id=coupon.id,
                sku=coupon.sku,
                value_cents=coupon.value_cents,
                error=error,
            )
    except KioskError as exc:
        return CouponCheckResult(transaction=check.transaction, ok=False, error=exc.code)


@dataclass(frozen=True)
class PushOutcome:
    applied: bool
    reason: str = ""
    cards: tuple[tuple[str, str], ...] = ()


def _seen(app_session: Any, message_id: str) -> bool:
    return app_session.get(InboundMessage, message_id) is not None


def apply_blocklist(app: AppContext, update: BlocklistUpdate, now: datetime) -> PushOutcome:
    """Blocks (or unblocks) cards here; an expired or repeated update changes nothing."""
    if update.expires_at <= now:
        log.warning(
            "blocklist update %s expired at %s: ignored", update.update_id, update.expires_at
        )
        return PushOutcome(False, "expired")
    key = f"blocklist:{update.update_id}"
    changed: list[tuple[str, str]] = []
    with transaction(app) as tx:
        if _seen(tx.session, key):
            return PushOutcome(False, "duplicate")
        for card_no in update.add:
            card = tx.session.get(Card, card_no)
            if card is not None and card.state == CardState.ACTIVE:
                card.state = CardState.BLOCKED
                card.state_changed_at = tx.now
                changed.append((card_no, CardState.BLOCKED))
        for card_no in update.remove:
            card = tx.session.get(Card, card_no)
            if card is not None and card.state == CardState.BLOCKED:
                card.state = CardState.ACTIVE
                card.state_changed_at = tx.now
                changed.append((card_no, CardState.ACTIVE))
        tx.session.add(
            InboundMessage(
                message_id=key,
                kind="blocklist",
                result=json.dumps({"changed": changed}),
                received_at=tx.now,
            )
        )
        tx.audit(
            "hq",
            "card.blocklist_update",
            update.update_id,
            add=len(update.add),
            remove=len(update.remove),
            changed=len(changed),
            reason=update.reason,
        )
    return PushOutcome(True, cards=tuple(changed))


def apply_catalogue(app: AppContext, catalogue: Catalogue) -> PushOutcome:
    """Prices, kinds and limits from HQ; each store keeps its own stock (new gifts start at 0)."""
    with transaction(app) as tx:
        current = int(get_meta(tx.session, CATALOGUE_VERSION) or 0)
        if catalogue.version <= current:
            return PushOutcome(False, "not newer")
        for item in catalogue.gifts:
            gift = tx.session.get(Gift, item.sku)
            if gift is None:
                gift = Gift(sku=item.sku, stock=0)
                tx.session.add(gift)
            gift.name = item.name
            gift.kind = item.kind
            gift.points_price = item.points_price
            gift.low_stock = item.low_stock
            gift.per_member_limit = item.per_member_limit
            gift.coupon_value_cents = item.coupon_value_cents
            gift.coupon_valid_days = item.coupon_valid_days
            gift.active = item.active
            gift.updated_at = tx.now
        listed = {g.sku for g in catalogue.gifts}
        for gift in tx.session.scalars(select(Gift).where(Gift.active.is_(True))):
            if gift.sku not in listed:
                gift.active = False  # withdrawn by HQ; history keeps it
                gift.updated_at = tx.now
        set_meta(tx.session, CATALOGUE_VERSION, str(catalogue.version))
        tx.audit("hq", "gift.catalogue", str(catalogue.version), gifts=len(catalogue.gifts))
    return PushOutcome(True)


def apply_rules(app: AppContext, rules: Rules) -> PushOutcome:
    """Stores HQ's points and offline rules and puts them in force in this process."""
    with transaction(app) as tx:
        current = int(get_meta(tx.session, RULES_VERSION) or 0)
        if rules.version <= current:
            return PushOutcome(False, "not newer")
        set_meta(tx.session, RULES_VERSION, str(rules.version))
        set_meta(tx.session, HQ_RULES, rules.model_dump_json())
        tx.audit("hq", "config.rules", str(rules.version))
    app.put_rules_in_force(rules)
    return PushOutcome(True)


def follow_stored_rules(app: AppContext, seen: int) -> int:
    """Puts HQ's stored rules in force in this process if their version is not ``seen`` (the
    version already in force here; 0 for none) and returns the version now in force.

    The agent calls it at start, the touchscreen at start and on every station poll, so a
    push the agent stored applies in the touchscreen's process without a restart. When
    nothing changed this is one read of the stored version; the rules themselves are read
    (in the same session) only when it differs.
    """
    with app.db.read() as session:
        version = int(get_meta(session, RULES_VERSION) or 0)
        if version == seen:
            return seen
        raw = get_meta(session, HQ_RULES)
    if not raw:
        return version
    rules = Rules.model_validate_json(raw)
    app.put_rules_in_force(rules)
    log.info("HQ rules version %s in force", rules.version)
    return rules.version
