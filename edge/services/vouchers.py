"""Handing a redeemed gift over at the desk (核销): its voucher is collected once, ever; one
not collected by its printed date lapses (its gift back in stock, its points by HQ's rule)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from pydantic import ValidationError
from sqlalchemy import select

from edge.app import AppContext
from edge.domain.errors import NotFound, Refusal
from edge.domain.gifts import check_voucher_collectable
from edge.domain.points import EntryKind, local_date
from edge.domain.staff import Permission
from edge.protocol.messages import GiftCollectedData, VoucherCheckResult
from edge.security.codes import VoucherClaims, unverified_voucher_claims, verify_voucher
from edge.services.connectivity import connectivity
from edge.services.gifts import stored_valid_until
from edge.services.ledger import pay_back_then_credit
from edge.services.remote import check_voucher_with_hq
from edge.services.staff import StaffIdentity, require
from edge.services.tx import Tx, transaction
from edge.storage.models import Gift, Member, Redemption, VoucherCollection

_MAX_CODE = 512


@dataclass(frozen=True)
class VoucherHandover:
    """A gift handed over against its voucher.

    ``verified`` is False for a voucher another kiosk printed, taken on this desk's own
    record alone (HQ unreachable, or not answering in time): its gift, card and signature
    are HQ's to check, and ``sku``, ``name`` and ``card_no`` are empty (staff read them from
    the slip). One HQ checked and granted is verified, with the gift as HQ knows it
    (``card_no`` masked).
    """

    voucher_id: str
    issuer_device_id: str
    sku: str
    name: str
    qty: int
    card_no: str
    valid_until: date | None
    verified: bool
    offline: bool
    staff_id: str
    collected_at: datetime


def collect_voucher(app: AppContext, code: str, staff: StaffIdentity) -> VoucherHandover:
    """Marks the gift voucher ``code`` collected, once: a reprint carries the same code and
    is refused like the original, as is a voucher past its printed date, a coupon, a code
    that is not genuine or that no redemption printed.

    While HQ is reachable, HQ decides first, for every voucher this desk would hand over:
    the kiosk asks it to claim the voucher for collection here (through the agent, within
    ``sync.fetch_timeout_s``), and HQ records the first claim only, so a voucher is handed
    over at one store of the chain. A voucher another kiosk printed cannot be checked here
    (this kiosk does not hold that kiosk's key): HQ's claim verifies it, with the gift's name
    and quantity. HQ not knowing it refuses it; one of this kiosk that HQ has not heard of
    yet (its events still on the way) is handed over on this kiosk's record.

    While HQ is unreachable, or does not answer in time, this desk's record decides: a
    voucher of another kiosk is taken unless collected here before, and HQ, told by the
    ``gift.collected`` event, flags a second collection elsewhere.

    Raises:
        PermissionDenied: ``staff`` may not hand gifts over.
        Refusal: ``voucher_malformed``, ``voucher_forged``, ``not_a_gift_voucher``,
            ``voucher_collected`` (here, or where and when HQ says), ``voucher_expired`` or
            ``voucher_foreign`` (another kiosk's, at a kiosk that does not sync with HQ).
        NotFound: ``unknown_voucher``, a genuine code of no redemption here, or a voucher
            of another kiosk HQ has no record of.
    """
    require(staff, Permission.HAND_OVER_GIFT)
    text = code.strip() if isinstance(code, str) else ""
    claims = _claims(app, text)
    own = claims.device_id == app.device_id
    # What this desk's record says first (nothing claimed at HQ for a voucher refused here),
    # then HQ is asked outside the write transaction, which then checks the record again.
    with transaction(app) as tx:
        before = tx.session.get(VoucherCollection, (claims.device_id, claims.voucher_id))
        offline = connectivity(tx.session, app, tx.now).offline
        if own:
            _own(app, tx, claims, before, staff, offline)
        else:
            _foreign(app, tx, claims, before, staff, offline, None)
        today = local_date(tx.now, app.tz)
    asks = app.config.sync.enabled and not offline
    hq = (
        check_voucher_with_hq(app, claims.device_id, claims.voucher_id, True, today, text)
        if asks
        else None
    )
    with transaction(app) as tx:
        before = tx.session.get(VoucherCollection, (claims.device_id, claims.voucher_id))
        unanswered = asks and hq is None
        if own:
            handover = _own(app, tx, claims, before, staff, offline or unanswered)
            _hq_refusals(app, hq, own=True)
        else:
            handover = _foreign(app, tx, claims, before, staff, offline or unanswered, hq)
        tx.session.add(
            VoucherCollection(
                issuer_device_id=claims.device_id,
                voucher_id=claims.voucher_id,
                redemption_id=claims.voucher_id if own else None,
                staff_id=staff.staff_id,
                verified=handover.verified,
                offline=handover.offline,
                collected_at=tx.now,
            )
        )
        tx.audit(
            staff.staff_id,
            "gift.collect",
            claims.voucher_id,
            issuer=claims.device_id,
            sku=handover.sku,
            verified=handover.verified,
            offline=handover.offline,
            hq=hq.state if hq is not None else "",
        )
        tx.emit(
            "gift.collected",
            {
                "voucher_id": claims.voucher_id,
                "issuer_device_id": claims.device_id,
                "redemption_id": claims.voucher_id if handover.verified else None,
                "sku": handover.sku,
                "qty": handover.qty,
                "staff_id": staff.staff_id,
                "verified": handover.verified,
                "offline": handover.offline,
            },
        )
        return handover


def _claims(app: AppContext, text: str) -> VoucherClaims:
    """What the code says, its signature checked when this device printed it."""
    if not text or len(text) > _MAX_CODE:
        raise Refusal("this is not a gift voucher code", code="voucher_malformed")
    try:
        claims = unverified_voucher_claims(text)
        if claims.device_id == app.device_id:
            claims = verify_voucher(app.keys.device_signing_key.public_key(), text)
    except Refusal as refusal:
        if refusal.code == "code_bad_signature":
            raise Refusal(
                "this voucher is not genuine (its signature does not match)",
                code="voucher_forged",
            ) from None
        raise Refusal("this is not a gift voucher code", code="voucher_malformed") from None
    if claims.kind != "gift":
        raise Refusal(
            "this is a coupon, not a gift voucher: it is used at the checkout",
            code="not_a_gift_voucher",
        )
    return claims


def _hq_refusals(app: AppContext, hq: VoucherCheckResult | None, own: bool) -> None:
    """Refuses what HQ's answer refuses: collected elsewhere (where and when), past its
    date, or (for another kiosk's voucher) unknown. ``claimed`` and no answer pass."""
    if hq is None or hq.state == "claimed":
        return
    if hq.state == "forged":
        raise Refusal(
            "this voucher is not genuine (HQ finds its signature does not match the kiosk "
            "that printed it)",
            code="voucher_forged",
        )
    if hq.state == "collected" and hq.collected_device_id == app.device_id:
        return  # HQ granted it here before, and this desk did not finish: it is ours
    if hq.state == "collected":
        assert hq.collected_at is not None
        when = hq.collected_at.astimezone(app.tz).strftime("%Y-%m-%d %H:%M")
        raise Refusal(
            f"this voucher was already collected on {when} at store {hq.collected_store_id}",
            code="voucher_collected",
            collected_at=hq.collected_at.isoformat(),
            when=when,
            store_id=hq.collected_store_id or "",
            device_id=hq.collected_device_id or "",
        )
    if hq.state == "unknown":
        if own:
            return  # HQ has not heard of this kiosk's redemption yet: its record decides
        raise NotFound(
            "HQ has no record of a gift redeemed with this voucher", code="unknown_voucher"
        )
    # known, not claimed: HQ found it past its printed date
    valid_until = hq.valid_until or date.min
    raise Refusal(
        f"this voucher expired on {valid_until.isoformat()}",
        code="voucher_expired",
        valid_until=valid_until.isoformat(),
    )


def _own(
    app: AppContext,
    tx: Tx,
    claims: VoucherClaims,
    before: VoucherCollection | None,
    staff: StaffIdentity,
    offline: bool,
) -> VoucherHandover:
    redemption = tx.session.get(Redemption, claims.voucher_id)
    if redemption is None or not redemption.voucher_code:
        raise NotFound("no gift was redeemed with this voucher here", code="unknown_voucher")
    gift = tx.session.get(Gift, redemption.sku)
    valid_until = stored_valid_until(redemption, app.tz)
    assert valid_until is not None  # a gift redemption has a voucher
    check_voucher_collectable(valid_until, before.collected_at if before else None, tx.now, app.tz)
    return VoucherHandover(
        claims.voucher_id,
        claims.device_id,
        redemption.sku,
        gift.name if gift is not None else redemption.sku,
        redemption.qty,
        redemption.card_no,
        valid_until,
        True,
        offline,
        staff.staff_id,
        tx.now,
    )


def _foreign(
    app: AppContext,
    tx: Tx,
    claims: VoucherClaims,
    before: VoucherCollection | None,
    staff: StaffIdentity,
    offline: bool,
    hq: VoucherCheckResult | None,
) -> VoucherHandover:
    if before is not None:
        check_voucher_collectable(date.max, before.collected_at, tx.now, app.tz)
    try:  # what HQ would set aside is no voucher any kiosk printed
        GiftCollectedData(
            voucher_id=claims.voucher_id, issuer_device_id=claims.device_id, verified=False
        )
    except ValidationError:
        raise Refusal("this is not a gift voucher code", code="voucher_malformed") from None
    if not app.config.sync.enabled:
        raise Refusal(
            f"this voucher was printed at another kiosk ({claims.device_id}), and this kiosk "
            "has no HQ to check it with",
            code="voucher_foreign",
            issuer=claims.device_id,
        )
    if hq is not None and not offline:
        _hq_refusals(app, hq, own=False)
        return VoucherHandover(
            claims.voucher_id,
            claims.device_id,
            hq.sku,
            hq.name or hq.sku,
            hq.qty,
            hq.card_masked,
            hq.valid_until,
            True,
            False,
            staff.staff_id,
            tx.now,
        )
    return VoucherHandover(
        claims.voucher_id,
        claims.device_id,
        "",
        "",
        0,
        "",
        None,
        False,
        True,
        staff.staff_id,
        tx.now,
    )


@dataclass(frozen=True)
class VoucherLapseRun:
    """What a run of :func:`lapse_vouchers` did; ``refund`` is the rule it ran under."""

    vouchers: int
    points_returned: int
    refund: bool
    at: datetime


def lapse_vouchers(app: AppContext, now: datetime | None = None) -> VoucherLapseRun:
    """Gift vouchers printed here and not collected by their printed date lapse: each gift
    goes back in stock, and when HQ's rules say so (``points.expired_voucher_refund``) its
    points go back to the member (paying back what they owe first).

    Run daily with the points expiry; running it again changes nothing. Vouchers printed
    before their date was kept with them never lapse: whether they were handed over was not
    recorded then.
    """
    refund = app.config.points.expired_voucher_refund
    vouchers = returned = 0
    with transaction(app) as tx:
        at = now or tx.now
        collected = select(VoucherCollection.redemption_id).where(
            VoucherCollection.redemption_id.is_not(None)
        )
        due = tx.session.scalars(
            select(Redemption)
            .where(
                Redemption.voucher_valid_until < local_date(at, app.tz),
                Redemption.voucher_lapsed_at.is_(None),
                Redemption.id.not_in(collected),
            )
            .order_by(Redemption.created_at, Redemption.id)
        ).all()
        for redemption in due:
            returned += _lapse(tx, redemption, refund, at)
            vouchers += 1
        if due:
            tx.audit(
                "system",
                "gift.vouchers_lapse",
                "",
                vouchers=vouchers,
                points_returned=returned,
                refund=refund,
            )
    return VoucherLapseRun(vouchers, returned, refund, at)


def _lapse(tx: Tx, redemption: Redemption, refund: bool, at: datetime) -> int:
    """One voucher lapsed: its gift back in stock, its points back if ``refund``; returns
    the points returned."""
    redemption.voucher_lapsed_at = at
    gift = tx.session.get(Gift, redemption.sku)
    if gift is not None:
        gift.stock += redemption.qty
        gift.updated_at = tx.now
        tx.emit("gift.stock", {"sku": gift.sku, "stock": gift.stock, "delta": redemption.qty})
    member = tx.session.get(Member, redemption.member_id)
    entries = []
    if refund and member is not None and member.deleted_at is None:
        entries = pay_back_then_credit(
            tx, member, redemption.points, EntryKind.VOUCHER_RETURN, redemption.id
        )
    points = sum(e.points for e in entries)
    tx.emit(
        "gift.voucher_lapsed",
        {
            "member_id": redemption.member_id,
            "card_no": redemption.card_no,
            "redemption_id": redemption.id,
            "sku": redemption.sku,
            "qty": redemption.qty,
            "points_returned": points,
            "entries": [e.as_dict() for e in entries],
        },
    )
    return points
