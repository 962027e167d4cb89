"""What HQ pushes to every kiosk: the card blocklist, the gift catalogue, the rules, and to
the kiosks of one store its staff list.

Each push is applied through here whoever delivers it (the agent today), idempotent by its
own id or version, refused when expired, and all of it or none of it in one transaction with
its audit record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from edge.app import AppContext
from edge.domain.cards import CardState
from edge.protocol import (
    CAMPAIGNS_SIGNING_DOMAIN,
    CATALOGUE_SIGNING_DOMAIN,
    RULES_SIGNING_DOMAIN,
    STAFF_SIGNING_DOMAIN,
    BlocklistUpdate,
    Campaigns,
    Catalogue,
    Rules,
    StaffList,
)
from edge.security.signing import verify_bytes
from edge.services.staff_lists import (
    HQ_STAFF_IDS,
    HQ_STAFF_STORE,
    STAFF_LIST_VERSION,
    staff_list_version,
)
from edge.services.tx import get_meta, set_meta, transaction
from edge.storage.models import Card, Gift, Staff
from edge.storage.sync_models import InboundMessage

log = logging.getLogger(__name__)

CATALOGUE_VERSION = "catalogue_version"
RULES_VERSION = "rules_version"
HQ_RULES = "hq_rules"
HQ_RULES_BEFORE = "hq_rules_before"  # in force until the latest takes effect
HQ_CAMPAIGNS = "hq_campaigns"  # HQ's campaigns document, as signed


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


def catalogue_signed(catalogue: Catalogue, public_key: Ed25519PublicKey | None) -> bool:
    """Whether HQ's command key signed ``catalogue`` (False without a key to check it with)."""
    return public_key is not None and verify_bytes(
        public_key, CATALOGUE_SIGNING_DOMAIN, catalogue.signed_bytes(), catalogue.signature_bytes()
    )


def applied_catalogue_version(session: Any) -> int:
    """The version of HQ's catalogue applied here (0: none yet), as telemetry reports it."""
    return int(get_meta(session, CATALOGUE_VERSION) or 0)


def apply_catalogue(
    app: AppContext, catalogue: Catalogue, public_key: Ed25519PublicKey | None
) -> PushOutcome:
    """Prices, kinds and limits from HQ; each store keeps its own stock (new gifts start at 0).

    A catalogue HQ's command key did not sign, or not newer than the one applied, changes
    nothing (a log line says why).
    """
    if not catalogue_signed(catalogue, public_key):
        log.warning(
            "catalogue version %s refused: not signed by HQ's command key", catalogue.version
        )
        return PushOutcome(False, "bad signature")
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
            if item.picture is not None:
                # shown once the picture is here (the agent fetches it); the tile shows the
                # gift's first character until then
                gift.picture = item.picture.sha256
            gift.updated_at = tx.now
        listed = {g.sku for g in catalogue.gifts}
        for gift in tx.session.scalars(select(Gift).where(Gift.active.is_(True))):
            if gift.sku not in listed:
                gift.active = False  # withdrawn by HQ; history keeps it
                gift.updated_at = tx.now
        set_meta(tx.session, CATALOGUE_VERSION, str(catalogue.version))
        tx.audit("hq", "gift.catalogue", str(catalogue.version), gifts=len(catalogue.gifts))
    return PushOutcome(True)


def rules_signed(rules: Rules, public_key: Ed25519PublicKey | None) -> bool:
    """Whether HQ's command key signed ``rules`` (False without a key to check it with)."""
    return public_key is not None and verify_bytes(
        public_key, RULES_SIGNING_DOMAIN, rules.signed_bytes(), rules.signature_bytes()
    )


def apply_rules(app: AppContext, rules: Rules, public_key: Ed25519PublicKey | None) -> PushOutcome:
    """Stores HQ's signed rules and puts them in force here from their effective time.

    A document not signed by HQ's command key, or not newer than the last one stored, changes
    nothing. The rules in force until a new document takes effect are kept beside it, so a
    restart before that moment goes on with them.
    """
    if not rules_signed(rules, public_key):
        log.warning("rules version %s refused: not signed by HQ's command key", rules.version)
        return PushOutcome(False, "bad signature")
    with transaction(app) as tx:
        current = int(get_meta(tx.session, RULES_VERSION) or 0)
        if rules.version <= current:
            return PushOutcome(False, "not newer")
        in_force = _stored_in_force(tx.session, tx.now)
        set_meta(tx.session, HQ_RULES_BEFORE, in_force.model_dump_json() if in_force else "")
        set_meta(tx.session, RULES_VERSION, str(rules.version))
        set_meta(tx.session, HQ_RULES, rules.model_dump_json())
        tx.audit(
            "hq",
            "config.rules",
            str(rules.version),
            effective_from=rules.effective_from.isoformat() if rules.effective_from else "now",
            member_days=None if rules.member_days is None else len(rules.member_days),
            tiers=None if rules.tiers is None else [t.code for t in rules.tiers],
        )
    app.schedule_rules(rules)
    return PushOutcome(True)


def _stored(session: Any, key: str) -> Rules | None:
    raw = get_meta(session, key)
    return Rules.model_validate_json(raw) if raw else None


def _stored_in_force(session: Any, now: datetime) -> Rules | None:
    """The stored rules in force at ``now``: the latest once it took effect, else the ones
    before it."""
    latest = _stored(session, HQ_RULES)
    if latest is None or latest.in_force_at(now):
        return latest
    return _stored(session, HQ_RULES_BEFORE)


@dataclass(frozen=True)
class RulesState:
    """Which of HQ's rules are in force (0: the device's own) and which wait for their time."""

    in_force: int
    next_version: int | None = None
    next_from: datetime | None = None


def rules_state(app: AppContext) -> RulesState:
    """What the stored documents say at this moment, whichever process asks."""
    with app.db.read() as session:
        now = app.clock()
        latest = _stored(session, HQ_RULES)
        in_force = _stored_in_force(session, now)
    current = in_force.version if in_force is not None else 0
    if latest is None or latest.in_force_at(now):
        return RulesState(current)
    return RulesState(current, latest.version, latest.effective_from)


def follow_stored_rules(app: AppContext, seen: int) -> int:
    """Puts HQ's stored rules in force in this process if the latest version stored is not
    ``seen`` (0 for none) and returns it: the rules in force now, and the latest scheduled
    for its effective time if that is still to come.

    The agent calls it at start, the touchscreen at start and on every station poll, so a
    push the agent stored applies in the touchscreen's process without a restart. When
    nothing changed this is one read of the stored version; the rules themselves are read
    (in the same session) only when it differs.
    """
    with app.db.read() as session:
        version = int(get_meta(session, RULES_VERSION) or 0)
        if version == seen:
            app.rules_due(app.clock())
            return seen
        latest = _stored(session, HQ_RULES)
        before = _stored(session, HQ_RULES_BEFORE)
    if latest is None:
        return version
    if not latest.in_force_at(app.clock()) and before is not None:
        app.put_rules_in_force(before)
    app.schedule_rules(latest)
    log.info(
        "HQ rules version %s %s",
        latest.version,
        "in force" if app.rules_version == latest.version else f"from {latest.effective_from}",
    )
    return latest.version


def apply_campaigns(
    app: AppContext, campaigns: Campaigns, public_key: Ed25519PublicKey | None
) -> PushOutcome:
    """Keeps HQ's signed campaigns document: the terms this kiosk checks HQ's coupons
    against (offline, the only word it has). Not signed by HQ's command key, or not newer
    than the one kept: nothing changes."""
    signed = public_key is not None and verify_bytes(
        public_key, CAMPAIGNS_SIGNING_DOMAIN, campaigns.signed_bytes(), campaigns.signature_bytes()
    )
    if not signed:
        log.warning(
            "campaigns version %s refused: not signed by HQ's command key", campaigns.version
        )
        return PushOutcome(False, "bad signature")
    with transaction(app) as tx:
        kept = stored_campaigns(tx.session)
        if kept is not None and campaigns.version <= kept.version:
            return PushOutcome(False, "not newer")
        set_meta(tx.session, HQ_CAMPAIGNS, campaigns.model_dump_json())
        tx.audit(
            "hq", "config.campaigns", str(campaigns.version), campaigns=len(campaigns.campaigns)
        )
    return PushOutcome(True)


def stored_campaigns(session: Any) -> Campaigns | None:
    raw = get_meta(session, HQ_CAMPAIGNS)
    return Campaigns.model_validate_json(raw) if raw else None


def staff_list_signed(staff_list: StaffList, public_key: Ed25519PublicKey | None) -> bool:
    """Whether HQ's command key signed ``staff_list`` (False without a key to check it with)."""
    return public_key is not None and verify_bytes(
        public_key, STAFF_SIGNING_DOMAIN, staff_list.signed_bytes(), staff_list.signature_bytes()
    )


def apply_staff_list(
    app: AppContext, staff_list: StaffList, public_key: Ed25519PublicKey | None
) -> PushOutcome:
    """Puts HQ's staff list for this store in force here (:mod:`edge.services.staff_lists`
    says what that means for signing in).

    A list HQ's command key did not sign, one for another store, or one not newer than the
    list in force changes nothing (a log line says why; the agent goes on).
    """
    if not staff_list_signed(staff_list, public_key):
        log.warning(
            "staff list version %s refused: not signed by HQ's command key", staff_list.version
        )
        return PushOutcome(False, "bad signature")
    if staff_list.store_id != app.store_id:
        log.warning(
            "staff list of store %s refused: this kiosk is in store %s",
            staff_list.store_id,
            app.store_id,
        )
        return PushOutcome(False, "another store")
    with transaction(app) as tx:
        current = staff_list_version(tx.session, app.store_id)  # 0 on a device moved since
        if staff_list.version <= current:
            if staff_list.version < current:
                log.warning(
                    "staff list version %s refused: version %s is in force",
                    staff_list.version,
                    current,
                )
            return PushOutcome(False, "not newer")
        listed = {a.staff_id for a in staff_list.accounts}
        added, changed = [], []
        for account in staff_list.accounts:
            staff = tx.session.get(Staff, account.staff_id)
            if staff is None:
                tx.session.add(
                    Staff(
                        id=account.staff_id,
                        name=account.name,
                        role=account.role,
                        pin_hash=account.pin_hash,
                        failed_attempts=0,
                        locked_until=None,
                        active=account.active,
                        created_at=tx.now,
                    )
                )
                added.append(account.staff_id)
                continue
            before = (staff.name, staff.role, staff.pin_hash, staff.active)
            staff.name, staff.role = account.name, account.role
            staff.pin_hash, staff.active = account.pin_hash, account.active
            if before != (staff.name, staff.role, staff.pin_hash, staff.active):
                changed.append(account.staff_id)
        unlisted = [
            staff
            for staff in tx.session.scalars(select(Staff).where(Staff.active.is_(True)))
            if staff.id not in listed
        ]
        for staff in unlisted:
            staff.active = False  # HQ manages the store now: its list alone signs in
        set_meta(tx.session, STAFF_LIST_VERSION, str(staff_list.version))
        set_meta(tx.session, HQ_STAFF_IDS, json.dumps(sorted(listed)))
        set_meta(tx.session, HQ_STAFF_STORE, staff_list.store_id)
        tx.audit(
            "hq",
            "staff.list",
            str(staff_list.version),
            added=added,
            changed=changed,
            disabled=sorted(a.staff_id for a in staff_list.accounts if not a.active),
            local_disabled=sorted(s.id for s in unlisted),
        )
    log.info(
        "staff list version %s in force: %d account(s)",
        staff_list.version,
        len(staff_list.accounts),
    )
    return PushOutcome(True)
