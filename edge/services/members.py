"""Member use cases: register, look up, show, update contact, delete on request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain import members as rules
from edge.domain.cards import CardState, parse_card_number, require_usable
from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.member_view import HistoryLine, MemberView
from edge.domain.merges import MERGE_OUT
from edge.domain.points import expiring_soon, local_date, pending, spendable
from edge.domain.staff import Permission
from edge.domain.tiers import find_tier, months_after, next_tier
from edge.security.codes import looks_like_member_code, verify_member_code
from edge.security.personal import mask_card, mask_name, mask_phone, normalize_phone
from edge.services.cards import issue_card
from edge.services.contact import contact_key, give_consent, resend_number
from edge.services.ledger import as_lots, credit
from edge.services.personal import birthday_of, erase_personal, name_of, set_personal
from edge.services.remote import ensure_here, fetch_if_unknown
from edge.services.staff import StaffIdentity, require
from edge.services.tiers import tier_measure
from edge.services.tx import Tx, run_once, transaction
from edge.storage.models import (
    BonusClaim,
    Card,
    LedgerEntry,
    Member,
    PointsLot,
    Purchase,
)


@dataclass(frozen=True)
class Registration:
    member_id: str
    card_no: str
    referral_bonus: int
    view: MemberView


def _member_by_phone(session: Session, app: AppContext, phone: str) -> Member | None:
    """The member with this phone; for a record merged at HQ, the member it was merged into."""
    digest = app.vault.lookup_hash(normalize_phone(phone))
    member = session.scalar(select(Member).where(Member.phone_hash == digest))
    for _ in range(8):  # a merged record names the member it went into (at most a few hops)
        kept = session.get(Member, member.merged_into) if member and member.merged_into else None
        if kept is None:
            break
        member = kept
    return member


def _card(session: Session, card_no: str) -> Card:
    card = session.get(Card, parse_card_number(card_no))
    if card is None:
        raise NotFound(f"no member card {card_no}", code="unknown_card", card_no=card_no)
    return card


def active_card(session: Session, member_id: str) -> Card | None:
    return session.scalar(
        select(Card)
        .where(Card.member_id == member_id, Card.state == CardState.ACTIVE)
        .order_by(Card.issued_at.desc())
        .limit(1)
    )


def current_card(session: Session, member_id: str) -> Card | None:
    """The card staff need to see: the active one, else the newest lost or blocked one."""
    return active_card(session, member_id) or session.scalar(
        select(Card)
        .where(Card.member_id == member_id, Card.state != CardState.REPLACED)
        .order_by(Card.issued_at.desc(), Card.card_no.desc())
        .limit(1)
    )


def resolve_member(
    session: Session, app: AppContext, card_no: str | None = None, phone: str | None = None
) -> tuple[Member, Card | None]:
    """The member behind a card or a phone number (a card in any state, for staff)."""
    if (card_no is None) == (phone is None):
        raise InvalidInput("name the member by exactly one of card or phone", code="bad_selector")
    if card_no is not None:
        card = _card(session, card_no)
        member = session.get(Member, card.member_id)
        assert member is not None
        return member, card
    assert phone is not None
    found = _member_by_phone(session, app, phone)
    if found is None:
        raise NotFound(
            f"no member with phone {mask_phone(normalize_phone(phone))}", code="unknown_phone"
        )
    return found, current_card(session, found.id)


def usable_member(tx: Tx, card_no: str) -> tuple[Member, Card]:
    """The member of an active card, for anything that moves points; refuses other cards."""
    card = _card(tx.session, card_no)
    require_usable(card.card_no, card.state)
    member = tx.session.get(Member, card.member_id)
    assert member is not None
    if member.deleted_at is not None:
        raise Refusal("this membership was closed", code="member_deleted")
    return member, card


def claim_member_code(app: AppContext, code: str) -> str:
    """Checks a signed member code and uses it up; returns the card number it names.

    The code must be genuine and fresh (:func:`verify_member_code`) and not used before: its
    nonce is recorded in the replay guard's own small database (:mod:`edge.storage.nonces`),
    not in a ledger transaction, so this costs no fsync. A used code stays used across a crash
    of any process; only a power cut can forget the last few (see that module).

    Raises:
        Refusal: ``code_replayed``, or what :func:`verify_member_code` refuses.
    """
    sec = app.config.security
    public_key = app.keys.member_code_public_key(sec.member_code_public_key)
    now = app.clock()
    claims = verify_member_code(
        public_key, code, now, sec.member_code_ttl_s, sec.member_code_skew_s
    )
    lifetime = timedelta(seconds=sec.member_code_ttl_s + 2 * sec.member_code_skew_s)
    if not app.used_codes.claim(claims.nonce, claims.issued_at + lifetime, now):
        raise Refusal(
            "this member code was already used; please refresh it on your phone",
            code="code_replayed",
        )
    return claims.card_no


def identify(app: AppContext, scanned: str) -> MemberView:
    """What the kiosk does with a scanned or typed code: a signed member code or a card number.

    Lost, blocked and replaced cards are refused with the reason; a replayed or expired
    member code is refused too, so a screenshot of someone's phone is worthless.
    """
    text = scanned.strip()
    card_no = claim_member_code(app, text) if looks_like_member_code(text) else text
    ensure_here(app, card_no=card_no)
    with app.db.read() as session:
        card = _card(session, card_no)
        require_usable(card.card_no, card.state)
        member = session.get(Member, card.member_id)
        assert member is not None
        return build_view(session, app, member, card)


def show_member(
    app: AppContext, card_no: str | None = None, phone: str | None = None, history: int = 10
) -> MemberView:
    """A member's full picture for staff: works for lost and blocked cards too."""
    ensure_here(app, card_no=card_no, phone=phone)
    with app.db.read() as session:
        member, card = resolve_member(session, app, card_no, phone)
        return build_view(session, app, member, card, history)


def build_view(
    session: Session, app: AppContext, member: Member, card: Card | None, history: int = 10
) -> MemberView:
    now = app.clock()
    today = local_date(now, app.tz)
    lots = as_lots(
        list(
            session.scalars(
                select(PointsLot).where(PointsLot.member_id == member.id, PointsLot.remaining > 0)
            )
        )
    )
    tier = find_tier(member.tier, app.ladder)
    measure = tier_measure(session, app, member.id, now)
    upcoming = next_tier(tier.code, measure, app.ladder)
    claims = set(
        session.execute(
            select(BonusClaim.kind, BonusClaim.period).where(BonusClaim.member_id == member.id)
        ).all()
    )
    # A record merged into this member: its history is theirs too (but for the entry that
    # took its points out, which the merge's entry on this member tells).
    absorbed: list[str] = []
    merged_here = [member.id]
    while merged_here and len(absorbed) < 100:  # records merged into those, in their turn
        merged_here = list(session.scalars(_MERGED_INTO, {"ids": merged_here}))
        absorbed += merged_here
    whose = LedgerEntry.member_id == member.id
    if absorbed:  # else the member's own entries, read newest first from their index
        whose = whose | (LedgerEntry.member_id.in_(absorbed) & (LedgerEntry.kind != MERGE_OUT))
    lines = tuple(
        HistoryLine(
            e.created_at,
            e.kind,
            e.points,
            e.ref,
            local_date(e.created_at, app.tz),
            e.note or "",
        )
        for e in session.scalars(
            select(LedgerEntry)
            .where(whose)
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
            .limit(history)
        )
    )
    return MemberView(
        member_id=member.id,
        card_no=card.card_no if card else None,
        card_state=card.state if card else None,
        card_masked=mask_card(card.card_no) if card else "",
        phone_masked=member.phone_masked,
        name_masked=mask_name(name_of(app, member)),
        tier=tier.code,
        tier_name_zh=tier.name_zh,
        tier_name_en=tier.name_en,
        balance=member.balance,
        available=spendable(lots, now),
        pending=pending(lots, now),
        expiring=tuple(expiring_soon(lots, now, tz=app.tz)),
        next_tier=upcoming.tier.code if upcoming else None,
        next_tier_name_zh=upcoming.tier.name_zh if upcoming else "",
        next_tier_name_en=upcoming.tier.name_en if upcoming else "",
        next_tier_missing=upcoming.missing if upcoming else None,
        tier_basis=app.config.tiers.basis,
        birthday_month=rules.is_birthday_month(birthday_of(app, member), today),
        checked_in_today=("checkin", today.isoformat()) in claims,
        birthday_bonus_claimed=("birthday", str(today.year)) in claims,
        overdraft_flagged=member.overdraft_flagged,
        registered_at=member.created_at,
        deleted=member.deleted_at is not None,
        history=lines,
        message_consent=member.message_consent_version is not None,
    )


_MERGED_INTO = select(Member.id).where(Member.merged_into.in_(bindparam("ids", expanding=True)))
_MEMBER_BY_CARD = select(Card.member_id).where(Card.card_no == bindparam("card_no"))
_MEMBER_BY_PHONE = select(Member.id).where(Member.phone_hash == bindparam("phone_hash"))


def find_member_id(
    app: AppContext, card_no: str | None = None, phone: str | None = None
) -> str | None:
    """The fastest lookup: member id by card or phone, None when unknown.

    One indexed read, by a statement built once, on a Core connection (no ORM session).
    """
    if card_no is not None:
        statement, params = _MEMBER_BY_CARD, {"card_no": parse_card_number(card_no)}
    else:
        assert phone is not None
        digest = app.vault.lookup_hash(normalize_phone(phone))
        statement, params = _MEMBER_BY_PHONE, {"phone_hash": digest}
    with app.db.read_connection() as conn:
        found: str | None = conn.execute(statement, params).scalar()
        return found


def register_member(
    app: AppContext,
    phone: str,
    consent: bool,
    name: str | None = None,
    birthday: str | None = None,
    referrer_phone: str | None = None,
    request_id: str | None = None,
    actor: str = "member",
    message_consent: bool = False,
) -> Registration:
    """Registers a member and issues their card, in one transaction.

    Consent to the privacy terms in force is required and its version is recorded. A referrer
    (by phone) earns the referral bonus at once. ``message_consent`` is the member's separate
    consent to messages (SMS reminders): its version is recorded, and the event carries the
    phone number sealed for HQ only (:mod:`edge.services.contact`); without it, no number
    leaves but hashed and masked.
    """
    rules.require_consent(consent)
    sealing_key = contact_key(app) if message_consent else None
    phone_n = normalize_phone(phone)
    name_v = rules.validate_name(name)
    birthday_v = rules.parse_birthday(birthday, local_date(app.clock(), app.tz))
    referrer_n = normalize_phone(referrer_phone) if referrer_phone else None
    if referrer_n == phone_n:
        raise Refusal("a member cannot refer themselves", code="self_referral")
    # A member of another store is fetched first, so their phone is not registered twice.
    fetch_if_unknown(app, phone=phone_n)
    if referrer_n is not None:
        fetch_if_unknown(app, phone=referrer_n)
    fingerprint = {"phone_hash": app.vault.lookup_hash(phone_n)}

    def apply(tx: Tx) -> tuple[Registration, str]:
        if _member_by_phone(tx.session, app, phone_n) is not None:
            raise Refusal(
                f"phone {mask_phone(phone_n)} is already registered", code="phone_registered"
            )
        referrer = None
        if referrer_n is not None:
            referrer = _member_by_phone(tx.session, app, referrer_n)
            if referrer is None or referrer.deleted_at is not None:
                raise Refusal(
                    f"no member with phone {mask_phone(referrer_n)} to credit the referral",
                    code="unknown_referrer",
                )
        base = app.ladder[0]
        member = Member(
            id=tx.new_id(),
            phone_hash=fingerprint["phone_hash"],
            phone_cipher=app.vault.encrypt(phone_n),
            phone_masked=mask_phone(phone_n),
            referrer_id=referrer.id if referrer else None,
            consent_version=app.config.privacy.consent_version,
            consented_at=tx.now,
            tier=base.code,
            tier_review_at=tier_period_end(app, tx.now),
            balance=0,
            overdraft_flagged=False,
            store_id=app.store_id,
            created_at=tx.now,
            updated_at=tx.now,
        )
        set_personal(app, member, name_v, birthday_v)
        # the sealed number goes only into the event, never into the member row
        messages = give_consent(tx, member, phone_n, sealing_key) if message_consent else {}
        tx.session.add(member)
        tx.session.flush()
        card = issue_card(tx, member)
        tx.audit(
            actor,
            "member.register",
            member.id,
            card_no=card.card_no,
            consent_version=member.consent_version,
            **{k: v for k, v in messages.items() if k != "phone_sealed"},
        )
        entries = []
        bonus = app.config.points.referral_bonus_points if referrer else 0
        if referrer is not None and bonus > 0:
            entries.append(credit(tx, referrer, bonus, "referral", f"referral:{member.id}"))
            tx.audit(actor, "points.referral", referrer.id, points=bonus, referred=member.id)
        tx.emit(
            "member.registered",
            {
                "member_id": member.id,
                "phone_hash": member.phone_hash,
                "phone_masked": member.phone_masked,
                "card_no": card.card_no,
                "card_type": card.card_type,
                "tier": member.tier,
                "consent_version": member.consent_version,
                "referrer_id": member.referrer_id,
                "entries": [e.as_dict() for e in entries],
                **messages,
            },
            # for the perks at every store that holds the member (the birthday gift); they
            # wait in the outbox encrypted, as in the member row
            personal={
                "name": name_v,
                "birthday": birthday_v.isoformat() if birthday_v else None,
            },
        )
        tx.session.flush()
        view = build_view(tx.session, app, member, card)
        return Registration(member.id, card.card_no, bonus, view), member.id

    def replay(tx: Tx, member_id: str) -> Registration:
        member = tx.session.get(Member, member_id)
        assert member is not None
        card = active_card(tx.session, member_id)
        view = build_view(tx.session, app, member, card)
        return Registration(member_id, card.card_no if card else "", 0, view)

    return run_once(app, request_id, "register", fingerprint, apply, replay)


def tier_period_end(app: AppContext, start: datetime) -> datetime:
    return months_after(start, app.config.tiers.period_months)


def update_contact(
    app: AppContext, card_no: str, new_phone: str, staff: StaffIdentity | None = None
) -> MemberView:
    """Changes a member's phone number (still unique). A member who agreed to messages sends
    HQ the new number too, sealed for HQ only (``member.message_consent``, same version)."""
    phone_n = normalize_phone(new_phone)
    ensure_here(app, card_no=card_no)
    with transaction(app) as tx:
        member, card = usable_member(tx, card_no)
        other = _member_by_phone(tx.session, app, phone_n)
        if other is not None and other.id != member.id:
            raise Refusal(
                f"phone {mask_phone(phone_n)} belongs to another member", code="phone_registered"
            )
        member.phone_hash = app.vault.lookup_hash(phone_n)
        member.phone_cipher = app.vault.encrypt(phone_n)
        member.phone_masked = mask_phone(phone_n)
        member.updated_at = tx.now
        actor = staff.staff_id if staff else "member"
        tx.audit(actor, "member.update_contact", member.id)
        tx.emit(
            "member.updated",
            {
                "member_id": member.id,
                "phone_hash": member.phone_hash,
                "phone_masked": member.phone_masked,
            },
        )
        if member.message_consent_version is not None:
            resend_number(tx, member, phone_n, contact_key(app))
        tx.session.flush()
        return build_view(tx.session, app, member, card)


@dataclass(frozen=True)
class Deletion:
    member_id: str
    cards_blocked: list[str]
    ledger_entries_kept: int


def delete_member(
    app: AppContext, staff: StaffIdentity, card_no: str | None = None, phone: str | None = None
) -> Deletion:
    """Erases a member's personal data on request (PIPL); the ledger stays, anonymised.

    The member row remains as a pseudonymous anchor for the ledger (HQ's totals and audits must
    still add up); phone, name and birthday are gone, every card is blocked.
    """
    require(staff, Permission.DELETE_MEMBER)
    with transaction(app) as tx:
        member, _card_row = resolve_member(tx.session, app, card_no, phone)
        if member.deleted_at is not None:
            raise Refusal("this member was already deleted", code="member_deleted")
        erase_personal(tx.session, member)
        member.deleted_at = tx.now
        member.updated_at = tx.now
        blocked = []
        for card in tx.session.scalars(select(Card).where(Card.member_id == member.id)):
            if card.state in (CardState.ACTIVE, CardState.LOST):
                card.state = CardState.BLOCKED
                card.state_changed_at = tx.now
                blocked.append(card.card_no)
        kept = (
            tx.session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.member_id == member.id)
            )
            or 0
        )
        tx.audit(staff.staff_id, "member.delete", member.id, cards_blocked=blocked)
        tx.emit("member.deleted", {"member_id": member.id, "cards_blocked": blocked})
        if blocked:
            tx.emit("card.blocklist", {"add": blocked, "reason": "member_deleted"})
        return Deletion(member.id, blocked, kept)


def purchases_total(session: Session, member_id: str, since: datetime) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Purchase.amount_cents), 0)).where(
                Purchase.member_id == member_id, Purchase.at > since
            )
        )
        or 0
    )
