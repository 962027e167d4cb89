"""Coupons of HQ's campaigns at this kiosk: a member's wallet, and a coupon taken at a till.

HQ signs its coupons with its command key (the code names ``HQ`` as its issuer); any kiosk
of the chain verifies one offline and reads its campaign's terms from HQ's signed campaigns
document (:func:`edge.services.pushes.apply_campaigns`). A use is single in the whole chain:
the kiosk asks HQ, through the agent, to record it before the lane takes the coupon. When HQ
cannot be asked, the kiosk decides from the document alone and accepts at most
``offline.max_hq_coupons`` coupons in ``offline.max_offline_hours``; HQ records those uses
when their events arrive and flags a coupon used twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from edge.app import AppContext
from edge.domain.coupons import HQ_ISSUER, CouponKind, Terms, campaign_of, usable
from edge.domain.errors import NotFound, Refusal
from edge.protocol import CampaignTerms, WalletCoupon
from edge.security.codes import unverified_voucher_claims, verify_voucher, voucher_device_id
from edge.services.gifts import coupon_status, use_coupon
from edge.services.members import find_member_id
from edge.services.pushes import stored_campaigns
from edge.services.remote import ask_hq_about_coupons, ensure_here
from edge.services.tx import transaction
from edge.storage.models import HqCouponUse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HqCoupon:
    """An HQ coupon checked or taken here: what it gives, and whether HQ confirmed it."""

    coupon_id: str
    terms: Terms
    offline: bool  # HQ could not be asked: this kiosk decided alone
    used_at: datetime | None = None


def terms_from(message: CampaignTerms) -> Terms:
    return Terms(
        campaign_id=message.campaign_id,
        title=message.title,
        kind=CouponKind(message.kind),
        value_cents=message.value_cents,
        threshold_cents=message.threshold_cents,
        percent=message.percent,
        gift_sku=message.gift_sku,
        valid_from=message.valid_from,
        valid_until=message.valid_until,
        finished=message.finished,
    )


def known_terms(app: AppContext, campaign_id: str) -> Terms | None:
    """The campaign's terms as HQ's latest document here says (None: not in it)."""
    with app.db.read() as session:
        document = stored_campaigns(session)
    for c in document.campaigns if document else []:
        if c.campaign_id == campaign_id:
            return terms_from(c)
    return None


def is_hq_coupon(code: str) -> bool:
    """Whether ``code`` claims to be one of HQ's coupons (its signature still unchecked)."""
    try:
        return voucher_device_id(code.strip()) == HQ_ISSUER
    except Refusal:
        return False


def verify_hq_coupon(app: AppContext, code: str) -> str:
    """The id of the HQ coupon ``code`` is, its signature checked with HQ's key.

    Raises:
        Refusal: ``code_malformed``, ``code_bad_signature`` (forged or altered),
            ``not_a_coupon``, ``unknown_coupon`` or ``no_hq_key``.
    """
    key = app.command_public_key()
    if key is None:
        raise Refusal(
            "this kiosk has no HQ key to check HQ's coupons with; ask a technician",
            code="no_hq_key",
        )
    claims = verify_voucher(key, code.strip())
    if claims.kind != "coupon":
        raise Refusal("this is a gift voucher, not a coupon", code="not_a_coupon")
    if claims.device_id != HQ_ISSUER or campaign_of(claims.voucher_id) is None:
        raise NotFound("HQ issued no such coupon", code="unknown_coupon")
    return claims.voucher_id


def take_hq_coupon(
    app: AppContext, code: str, ref: str, actor: str = "lane", use: bool = True
) -> HqCoupon:
    """Checks an HQ coupon and, with ``use``, takes it: HQ records the use first, or, when
    HQ cannot be asked, this kiosk accepts it within its offline cap. Either way the use is
    kept here (a coupon is taken here once) with its audit record and ``coupon.used``
    event, in one transaction.

    Raises:
        Refusal / NotFound: the coupon is forged, unknown, used, expired, not yet valid, of a
            finished campaign, or offline past the cap; nothing is changed.
    """
    coupon = verify_hq_coupon(app, code)
    campaign_id = campaign_of(coupon)
    assert campaign_id is not None
    terms = known_terms(app, campaign_id)
    now = app.clock()
    _not_taken_here(app, coupon)
    if terms is not None:
        usable(terms, now)
    answer = ask_hq_about_coupons(
        app, {"action": "use" if use else "check", "coupon_id": coupon, "ref": ref[:64]}
    )
    if answer is not None:
        if not answer.ok:
            raise Refusal(
                answer.message or "HQ refused this coupon", code=answer.error or "refused"
            )
        if answer.terms is not None:
            terms = terms_from(answer.terms)
    if terms is None:
        raise Refusal(
            f"HQ cannot be asked and this kiosk does not know campaign {campaign_id} yet",
            code="coupon_unknown_campaign",
        )
    offline = answer is None
    if not use:
        return HqCoupon(coupon, terms, offline)
    return _record(app, coupon, terms, ref[:64], actor, offline)


def _not_taken_here(app: AppContext, coupon: str) -> None:
    with app.db.read() as session:
        taken = session.get(HqCouponUse, coupon)
    if taken is not None:
        raise Refusal(
            f"this coupon was used here at {taken.used_at.isoformat()}", code="coupon_used"
        )


def _record(
    app: AppContext,
    coupon: str,
    terms: Terms,
    ref: str,
    actor: str,
    offline: bool,
) -> HqCoupon:
    """Keeps the use of an HQ coupon here (within the offline cap when HQ was not asked)."""
    used_at = _record_use(
        app,
        coupon,
        issuer=HQ_ISSUER,
        campaign_id=terms.campaign_id,
        kind=terms.kind.value,
        value_cents=terms.value_cents,
        sku=terms.gift_sku,
        ref=ref,
        actor=actor,
        offline=offline,
    )
    return HqCoupon(coupon, terms, offline, used_at)


def _record_use(
    app: AppContext,
    coupon: str,
    *,
    issuer: str,
    campaign_id: str,
    kind: str,
    value_cents: int,
    sku: str,
    ref: str,
    actor: str,
    offline: bool,
) -> datetime:
    """Keeps a coupon HQ answered for (or, ``offline``, this kiosk accepted within its cap)
    as used here, with its audit record and ``coupon.used`` event, in one transaction; when.

    Raises:
        Refusal: ``coupon_used`` (taken here a moment ago) or ``offline_coupon_cap``.
    """
    limit = app.offline_limit
    with transaction(app) as tx:
        if tx.session.get(HqCouponUse, coupon) is not None:
            raise Refusal("this coupon was used here a moment ago", code="coupon_used")
        if offline:
            since = tx.now - limit.max_offline
            accepted = tx.session.scalar(
                select(func.count())
                .select_from(HqCouponUse)
                .where(HqCouponUse.offline.is_(True), HqCouponUse.used_at >= since)
            )
            cap = app.config.offline.max_hq_coupons
            if int(accepted or 0) >= cap:
                raise Refusal(
                    f"HQ cannot be asked and this kiosk has accepted {cap} HQ coupons offline "
                    "already; try again when HQ is back",
                    code="offline_coupon_cap",
                )
        tx.session.add(
            HqCouponUse(
                coupon_id=coupon,
                campaign_id=campaign_id,
                kind=kind,
                value_cents=value_cents,
                ref=ref,
                actor=actor[:64],
                offline=offline,
                used_at=tx.now,
            )
        )
        tx.audit(actor, "coupon.use", coupon, ref=ref, offline=offline, issuer=issuer)
        tx.emit(
            "coupon.used",
            {
                "coupon_id": coupon,
                "sku": sku,
                "value_cents": value_cents,
                "ref": ref,
                "issuer": issuer,
                "campaign_id": campaign_id,
                "offline": offline,
            },
        )
        return tx.now


def take_kiosk_coupon(
    app: AppContext, code: str, ref: str, actor: str = "lane", use: bool = True
) -> CouponTaken:
    """Checks a coupon a kiosk printed for points and, with ``use``, spends it, once in the
    chain: HQ is asked first (it checks another kiosk's signature and records the use). This
    kiosk's own coupon is decided by its own record when HQ cannot be asked or has not heard
    of it yet (its ``coupon.used`` event tells HQ, which flags a second use); another
    kiosk's needs HQ's answer, since only HQ holds that kiosk's key.

    Raises:
        KioskError: why the coupon cannot be taken; nothing is changed.
    """
    text = code.strip()
    claims = unverified_voucher_claims(text)
    if claims.kind != "coupon":
        raise Refusal("this is a gift voucher, not a coupon", code="not_a_coupon")
    own = claims.device_id == app.device_id
    if own:
        status = coupon_status(app, text)  # the signature, and this kiosk's own record
        if status.error:
            raise Refusal(_STATUS_WORDS.get(status.error, status.error), code=status.error)
    else:
        _not_taken_here(app, claims.voucher_id)
    asked = {"action": "use" if use else "check", "coupon_id": claims.voucher_id}
    answer = ask_hq_about_coupons(app, {**asked, "code": text, "ref": ref[:64]})
    if own:
        hq_has_no_record = answer is not None and answer.error in HQ_HAS_NO_RECORD
        if answer is not None and not answer.ok and not hq_has_no_record:
            raise Refusal(answer.message or "HQ refused this coupon", code=answer.error)
        offline = answer is None
        if not use:
            return CouponTaken(
                status.coupon_id, CouponKind.AMOUNT_OFF.value, status.value_cents,
                sku=status.sku, offline=offline,
            )  # fmt: skip
        used = use_coupon(app, text, ref, actor=actor)
        return CouponTaken(
            used.coupon_id, CouponKind.AMOUNT_OFF.value, used.value_cents, sku=used.sku,
            offline=offline,
        )  # fmt: skip
    if answer is None:
        raise Refusal(
            f"this coupon was printed by kiosk {claims.device_id} and HQ cannot be asked now "
            "to check it; try again when HQ is back",
            code="coupon_foreign_offline",
        )
    if not answer.ok:
        raise Refusal(answer.message or "HQ refused this coupon", code=answer.error)
    if use:
        _record_use(
            app,
            claims.voucher_id,
            issuer=claims.device_id,
            campaign_id="",
            kind=CouponKind.AMOUNT_OFF.value,
            value_cents=answer.value_cents,
            sku=answer.sku,
            ref=ref[:64],
            actor=actor,
            offline=False,
        )
    return CouponTaken(
        claims.voucher_id, CouponKind.AMOUNT_OFF.value, answer.value_cents, sku=answer.sku
    )


# HQ's answers that say only that it cannot judge a kiosk's own coupon (the event that
# printed it, or the kiosk's key, has not reached HQ yet): the kiosk's own record decides
HQ_HAS_NO_RECORD = frozenset({"unknown_coupon", "unknown_device_key"})


@dataclass(frozen=True)
class Wallet:
    """A member's coupons as HQ holds them; ``reachable`` False when HQ could not be asked
    (then ``coupons`` is empty and the screen says so, rather than "no coupons")."""

    reachable: bool
    coupons: tuple[WalletCoupon, ...] = ()


def member_wallet(app: AppContext, member_id: str) -> Wallet:
    """The member's coupons that can be used (or soon), from HQ; the ones this kiosk took
    already are left out even if HQ has not heard of their use yet."""
    answer = ask_hq_about_coupons(app, {"action": "wallet", "member_id": member_id})
    if answer is None:
        return Wallet(False)
    if not answer.ok:
        log.warning("HQ did not give member %s's wallet: %s", member_id, answer.message)
        return Wallet(False)
    with app.db.read() as session:
        taken = set(
            session.scalars(
                select(HqCouponUse.coupon_id).where(
                    HqCouponUse.coupon_id.in_([c.coupon_id for c in answer.coupons])
                )
            )
        )
    return Wallet(True, tuple(c for c in answer.coupons if c.coupon_id not in taken))


@dataclass(frozen=True)
class CouponTaken:
    """What a till is told about a coupon checked (``use`` False) or taken: one this kiosk
    printed (an amount off, ``campaign_id`` empty) or one of HQ's campaigns."""

    coupon_id: str
    kind: str
    value_cents: int
    threshold_cents: int = 0
    percent: int = 0
    sku: str = ""
    campaign_id: str = ""
    title: str = ""
    offline: bool = False


_STATUS_WORDS = {
    "unknown_coupon": "this kiosk printed no such coupon",
    "coupon_used": "this coupon was used already",
    "coupon_expired": "this coupon has expired",
}


def take_coupon(
    app: AppContext, code: str, ref: str, actor: str = "lane", use: bool = True
) -> CouponTaken:
    """Checks a coupon and, with ``use``, spends it, whoever issued it: the one door for a
    lane, the console and the staff screen.

    Raises:
        KioskError: why the coupon cannot be taken; nothing is changed.
    """
    if is_hq_coupon(code):
        taken = take_hq_coupon(app, code, ref, actor, use=use)
        t = taken.terms
        return CouponTaken(
            taken.coupon_id,
            t.kind.value,
            t.value_cents,
            t.threshold_cents,
            t.percent,
            t.gift_sku,
            t.campaign_id,
            t.title,
            taken.offline,
        )
    return take_kiosk_coupon(app, code, ref, actor, use=use)


def wallet_for_card(app: AppContext, card_no: str) -> Wallet:
    """The wallet of the member holding ``card_no`` (fetched from HQ first if they are of
    another store).

    Raises:
        NotFound: no member has this card.
    """
    ensure_here(app, card_no=card_no)
    member_id = find_member_id(app, card_no=card_no)
    if member_id is None:
        raise NotFound("no member has this card", code="unknown_card")
    return member_wallet(app, member_id)
