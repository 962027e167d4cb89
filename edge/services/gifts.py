"""Gift and coupon use cases: catalogue, restock, redeem (never oversold), coupon use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from edge.app import AppContext
from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.domain.gifts import (
    DEFAULT_VOUCHER_VALID_DAYS,
    GiftTerms,
    check_redemption,
    is_low_stock,
    validate_sku,
    voucher_valid_until,
)
from edge.domain.offline import check_offline_redemption
from edge.domain.points import EntryKind
from edge.domain.staff import Permission
from edge.security.codes import (
    sign_voucher,
    unverified_voucher_claims,
    verify_voucher,
    voucher_device_id,
)
from edge.services.connectivity import connectivity
from edge.services.ledger import debit
from edge.services.members import usable_member
from edge.services.pictures import prune_pictures, take_picture
from edge.services.remote import ensure_here
from edge.services.staff import StaffIdentity, require
from edge.services.tx import Tx, run_once, transaction
from edge.storage.models import Card, ChainRedemption, Coupon, Gift, Member, Redemption

MAX_STOCK = 1_000_000


@dataclass(frozen=True)
class GiftLine:
    sku: str
    name: str
    kind: str
    points_price: int
    stock: int
    low_stock: int
    per_member_limit: int | None
    coupon_value_cents: int
    active: bool
    is_low: bool
    picture: str | None = None  # the SHA-256 of its picture (edge.services.pictures)


def _line(g: Gift) -> GiftLine:
    return GiftLine(
        g.sku,
        g.name,
        g.kind,
        g.points_price,
        g.stock,
        g.low_stock,
        g.per_member_limit,
        g.coupon_value_cents,
        g.active,
        is_low_stock(g.stock, g.low_stock),
        g.picture,
    )


def _count(value: int, what: str, low: int = 0, high: int = MAX_STOCK) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            f"{what} must be a whole number from {low} to {high}", code="bad_number", field=what
        )
    return value


def add_gift(
    app: AppContext,
    sku: str,
    name: str,
    points: int,
    stock: int,
    low_stock: int = 0,
    per_member_limit: int | None = None,
    kind: str = "gift",
    coupon_value_cents: int = 0,
    coupon_valid_days: int = 30,
    actor: str = "console",
    image: bytes | None = None,
) -> GiftLine:
    """Adds a gift or coupon to the catalogue, with ``image`` as its picture if given (a
    picture that fails its checks refuses the whole addition)."""
    sku_v = validate_sku(sku)
    name_v = name.strip()
    if not name_v or len(name_v) > 64 or not name_v.isprintable():
        raise InvalidInput("a gift name is 1-64 printable characters", code="bad_name")
    _count(points, "points", 1, 10_000_000)
    _count(stock, "stock")
    _count(low_stock, "low-stock threshold")
    if per_member_limit is not None:
        _count(per_member_limit, "per-member limit", 1, 1000)
    if kind not in ("gift", "coupon"):
        raise InvalidInput("kind is gift or coupon", code="bad_kind")
    if kind == "coupon":
        _count(coupon_value_cents, "coupon value in cents", 1, 10_000_000)
        _count(coupon_valid_days, "coupon validity in days", 1, 3650)
    picture = take_picture(app, image) if image is not None else None
    with transaction(app) as tx:
        if tx.session.get(Gift, sku_v) is not None:
            raise Refusal(f"gift {sku_v} already exists (restock it instead)", code="gift_exists")
        gift = Gift(
            sku=sku_v,
            name=name_v,
            kind=kind,
            points_price=points,
            stock=stock,
            low_stock=low_stock,
            per_member_limit=per_member_limit,
            coupon_value_cents=coupon_value_cents,
            coupon_valid_days=coupon_valid_days,
            active=True,
            updated_at=tx.now,
            picture=picture.sha256 if picture else None,
        )
        tx.session.add(gift)
        tx.audit(
            actor,
            "gift.add",
            sku_v,
            name=name_v,
            points=points,
            stock=stock,
            kind=kind,
            picture=gift.picture,
        )
        tx.emit(
            "gift.changed",
            {"sku": sku_v, "name": name_v, "kind": kind, "points_price": points, "stock": stock},
        )
        return _line(gift)


def set_gift_picture(app: AppContext, sku: str, image: bytes, actor: str = "console") -> GiftLine:
    """Gives gift ``sku`` the picture ``image`` (checked and scaled, see
    :func:`~edge.services.pictures.take_picture`); pictures no gift shows any more are
    pruned."""
    sku_v = validate_sku(sku)
    picture = take_picture(app, image)
    with transaction(app) as tx:
        gift = tx.session.get(Gift, sku_v)
        if gift is None:
            raise NotFound(f"no gift {sku_v}", code="unknown_gift")
        before, gift.picture = gift.picture, picture.sha256
        gift.updated_at = tx.now
        tx.audit(actor, "gift.picture", sku_v, before=before, after=picture.sha256)
        line = _line(gift)
        shown = select(Gift.picture).where(Gift.picture.is_not(None))
        named = {str(sha) for sha in tx.session.scalars(shown)}
    prune_pictures(app, named)
    return line


def list_gifts(app: AppContext, include_inactive: bool = False) -> list[GiftLine]:
    with app.db.read() as session:
        stmt = select(Gift).order_by(Gift.points_price, Gift.sku)
        if not include_inactive:
            stmt = stmt.where(Gift.active.is_(True))
        return [_line(g) for g in session.scalars(stmt)]


def restock_gift(app: AppContext, sku: str, qty: int, staff: StaffIdentity) -> GiftLine:
    require(staff, Permission.RESTOCK)
    _count(qty, "quantity", 1, MAX_STOCK)
    with transaction(app) as tx:
        gift = tx.session.get(Gift, validate_sku(sku))
        if gift is None:
            raise NotFound(f"no gift {sku}", code="unknown_gift")
        before = gift.stock
        gift.stock += qty
        gift.updated_at = tx.now
        tx.audit(staff.staff_id, "gift.restock", gift.sku, before=before, after=gift.stock)
        tx.emit("gift.stock", {"sku": gift.sku, "stock": gift.stock, "delta": qty})
        return _line(gift)


@dataclass(frozen=True)
class RedemptionResult:
    redemption_id: str
    card_no: str
    sku: str
    name: str
    kind: str
    qty: int
    points: int
    balance: int
    voucher_code: str
    coupon_codes: list[str]
    coupon_value_cents: int
    coupon_expires_at: datetime | None
    offline: bool
    low_stock: bool
    at: datetime
    # The last day its gift voucher can be collected, as printed (None for coupons).
    voucher_valid_until: date | None = None


def redeem_gift(
    app: AppContext,
    card_no: str,
    sku: str,
    qty: int = 1,
    request_id: str | None = None,
    actor: str = "member",
) -> RedemptionResult:
    """Exchanges points for a gift or coupons, in one transaction.

    Stock is taken with a guarded UPDATE (and a CHECK in the schema), so two kiosks or two
    taps can never oversell; points come from the soonest-expiring lots. While HQ is
    unreachable the offline caps apply and the redemption is marked offline; a refusal by
    those caps is audited after the redemption's own transaction has rolled back.
    """
    sku_v = validate_sku(sku)
    fingerprint = {"card_no": card_no.strip(), "sku": sku_v, "qty": qty}
    refused_offline: list[str] = []  # the member an offline cap refused

    ensure_here(app, card_no=card_no)

    def apply(tx: Tx) -> tuple[RedemptionResult, str]:
        member, card = usable_member(tx, card_no)
        gift = tx.session.get(Gift, sku_v)
        if gift is None:
            raise NotFound(f"no gift {sku_v}", code="unknown_gift")
        points = check_redemption(_terms(gift), qty, _redeemed_before(tx, member.id, sku_v))
        link = connectivity(tx.session, app, tx.now)
        if link.offline:
            try:
                _check_offline_caps(app, tx, member.id, points, link.since or tx.now)
            except Refusal:
                refused_offline.append(member.id)
                raise
        _check_balance(member, points)
        result = _record_redemption(app, tx, actor, member, card, gift, qty, points, link.offline)
        return result, result.redemption_id

    def replay(tx: Tx, redemption_id: str) -> RedemptionResult:
        return _stored_redemption(tx.session, redemption_id, app.tz)

    try:
        return run_once(app, request_id, "redeem", fingerprint, apply, replay)
    except Refusal as refusal:
        if refused_offline:
            _audit_refusal(app, refused_offline[-1], sku_v, refusal)
        raise


def _record_redemption(
    app: AppContext,
    tx: Tx,
    actor: str,
    member: Member,
    card: Card,
    gift: Gift,
    qty: int,
    points: int,
    offline: bool,
) -> RedemptionResult:
    """Takes the points and the stock, writes the redemption with its voucher or coupons,
    and records it in the audit chain and the outbox."""
    redemption_id = tx.new_id()
    entries = debit(tx, member, points, EntryKind.REDEMPTION, redemption_id)
    _take_stock(tx, gift, qty)
    # A gift is collected with the voucher; a coupon redemption's proof is its coupons.
    voucher = (
        sign_voucher(app.keys.device_signing_key, "gift", redemption_id, app.device_id)
        if gift.kind == "gift"
        else ""
    )
    valid_until = (
        voucher_valid_until(tx.now, app.tz, app.config.gifts.voucher_valid_days)
        if voucher
        else None
    )
    tx.session.add(
        Redemption(
            id=redemption_id,
            member_id=member.id,
            card_no=card.card_no,
            sku=gift.sku,
            qty=qty,
            points=points,
            voucher_code=voucher,
            offline=offline,
            created_at=tx.now,
            voucher_valid_until=valid_until,
        )
    )
    tx.session.flush()  # coupons reference the redemption
    coupons, expires = _mint_coupons(app, tx, gift, member.id, redemption_id, qty)
    low = is_low_stock(gift.stock, gift.low_stock)
    tx.audit(
        actor,
        "gift.redeem",
        member.id,
        redemption_id=redemption_id,
        sku=gift.sku,
        qty=qty,
        points=points,
        offline=offline,
    )
    tx.emit(
        "gift.redeemed",
        {
            "member_id": member.id,
            "card_no": card.card_no,
            "redemption_id": redemption_id,
            "sku": gift.sku,
            "name": gift.name,
            "qty": qty,
            "points": points,
            "offline": offline,
            "coupons": len(coupons),
            "valid_until": valid_until.isoformat() if valid_until else None,
            **(
                {
                    "coupon_ids": [unverified_voucher_claims(c).voucher_id for c in coupons],
                    "coupon_value_cents": gift.coupon_value_cents,
                    "coupon_expires_at": expires.isoformat() if expires else None,
                }
                if coupons
                else {}
            ),
            "entries": [e.as_dict() for e in entries],
        },
    )
    if low:
        _emit_low_stock(tx, gift)
    return RedemptionResult(
        redemption_id,
        card.card_no,
        gift.sku,
        gift.name,
        gift.kind,
        qty,
        points,
        member.balance,
        voucher,
        coupons,
        gift.coupon_value_cents,
        expires,
        offline,
        low,
        tx.now,
        valid_until,
    )


def _terms(gift: Gift) -> GiftTerms:
    return GiftTerms(
        gift.sku,
        gift.name,
        gift.points_price,
        gift.stock,
        gift.low_stock,
        gift.per_member_limit,
        gift.active,
    )


def _redeemed_before(tx: Tx, member_id: str, sku: str) -> int:
    """How many of ``sku`` the member has redeemed so far (for the per-member limit): here,
    and at the other devices of the chain as far as this one has heard (the replica keeps
    those in ``chain_redemption``; offline, what has not reached it yet is not counted)."""
    here = tx.session.scalar(
        select(func.coalesce(func.sum(Redemption.qty), 0)).where(
            Redemption.member_id == member_id, Redemption.sku == sku
        )
    )
    elsewhere = tx.session.scalar(
        select(func.coalesce(func.sum(ChainRedemption.qty), 0)).where(
            ChainRedemption.member_id == member_id,
            ChainRedemption.sku == sku,
            ~exists().where(Redemption.id == ChainRedemption.id),
        )
    )
    return int(here or 0) + int(elsewhere or 0)


def _check_offline_caps(
    app: AppContext, tx: Tx, member_id: str, points: int, since: datetime
) -> None:
    """The offline caps on redeemed points, per member and per device, since HQ went away."""
    member_used, device_used = _offline_usage(tx, member_id, since)
    check_offline_redemption(app.offline_limit, points, since, tx.now, member_used, device_used)


def _check_balance(member: Member, points: int) -> None:
    if member.balance >= points:
        return
    # Open lots can outnumber the balance after HQ booked an offline double spend against
    # this member: the overdraft is paid back before anything is redeemed.
    owed = max(0, -member.balance)
    raise Refusal(
        f"not enough points: {points} needed, balance {member.balance}"
        + (f" ({owed} points owed from an earlier offline redemption)" if owed else ""),
        code="insufficient_points",
        needed=points,
        available=max(0, member.balance),
        pending=0,
    )


def _take_stock(tx: Tx, gift: Gift, qty: int) -> None:
    """Takes ``qty`` from the stock with a guarded UPDATE: never below zero, never oversold."""
    taken = tx.session.execute(
        update(Gift)
        .where(Gift.sku == gift.sku, Gift.stock >= qty)
        .values(stock=Gift.stock - qty, updated_at=tx.now)
        .returning(Gift.stock)
    ).scalar_one_or_none()
    if taken is None:
        raise Refusal(f"{gift.name} is out of stock", code="out_of_stock", sku=gift.sku)
    tx.session.refresh(gift)


def _mint_coupons(
    app: AppContext, tx: Tx, gift: Gift, member_id: str, redemption_id: str, qty: int
) -> tuple[list[str], datetime | None]:
    """For a coupon gift, ``qty`` signed coupons and their expiry; nothing for a gift."""
    if gift.kind != "coupon":
        return [], None
    expires = tx.now + timedelta(days=gift.coupon_valid_days)
    codes: list[str] = []
    for _ in range(qty):
        coupon_id = tx.new_id()
        code = sign_voucher(app.keys.device_signing_key, "coupon", coupon_id, app.device_id)
        tx.session.add(
            Coupon(
                id=coupon_id,
                redemption_id=redemption_id,
                member_id=member_id,
                sku=gift.sku,
                value_cents=gift.coupon_value_cents,
                code=code,
                issued_at=tx.now,
                expires_at=expires,
            )
        )
        codes.append(code)
    return codes, expires


def _emit_low_stock(tx: Tx, gift: Gift) -> None:
    tx.audit("system", "gift.low_stock", gift.sku, stock=gift.stock, threshold=gift.low_stock)
    tx.emit(
        "alert.low_stock",
        {"sku": gift.sku, "name": gift.name, "stock": gift.stock, "threshold": gift.low_stock},
    )


def _stored_redemption(session: Session, redemption_id: str, tz: ZoneInfo) -> RedemptionResult:
    r = session.get(Redemption, redemption_id)
    assert r is not None
    gift = session.get(Gift, r.sku)
    assert gift is not None
    coupons = list(
        session.scalars(select(Coupon).where(Coupon.redemption_id == r.id).order_by(Coupon.id))
    )
    member = session.get(Member, r.member_id)
    assert member is not None
    return RedemptionResult(
        r.id,
        r.card_no,
        r.sku,
        gift.name,
        gift.kind,
        r.qty,
        r.points,
        member.balance,
        r.voucher_code,
        [c.code for c in coupons],
        gift.coupon_value_cents,
        coupons[0].expires_at if coupons else None,
        r.offline,
        is_low_stock(gift.stock, gift.low_stock),
        r.created_at,
        stored_valid_until(r, tz),
    )


def stored_valid_until(r: Redemption, tz: ZoneInfo) -> date | None:
    """The last day ``r``'s gift voucher can be collected: as kept with it, or for a voucher
    printed before that was kept, the 30 days printed on it."""
    if not r.voucher_code:
        return None
    if r.voucher_valid_until is not None:
        return r.voucher_valid_until
    return voucher_valid_until(r.created_at, tz, DEFAULT_VOUCHER_VALID_DAYS)


def last_redemption(app: AppContext) -> RedemptionResult | None:
    """The most recent redemption on this device (for staff to reprint its voucher)."""
    with app.db.read() as session:
        rid = session.scalar(
            select(Redemption.id)
            .order_by(Redemption.created_at.desc(), Redemption.id.desc())
            .limit(1)
        )
        return _stored_redemption(session, rid, app.tz) if rid else None


def _offline_usage(tx: Tx, member_id: str, since: datetime) -> tuple[int, int]:
    base = select(func.coalesce(func.sum(Redemption.points), 0)).where(
        Redemption.offline.is_(True), Redemption.created_at >= since
    )
    member_used = tx.session.scalar(base.where(Redemption.member_id == member_id)) or 0
    device_used = tx.session.scalar(base) or 0
    return int(member_used), int(device_used)


def _audit_refusal(app: AppContext, member_id: str, sku: str, refusal: Refusal) -> None:
    """Offline refusals are audited (after the redemption's own transaction rolled back)."""
    with transaction(app) as tx:
        tx.audit("member", "gift.redeem_refused_offline", member_id, sku=sku, reason=refusal.code)


@dataclass(frozen=True)
class CouponStatus:
    """Whether a coupon printed here can be used now; ``error`` says why not ("" if it can)."""

    coupon_id: str
    sku: str
    value_cents: int
    error: str


def coupon_status(app: AppContext, code: str) -> CouponStatus:
    """Checks a coupon without spending it (a lane asking before it rings the sale up).

    Raises:
        KioskError: the code is not a valid signed voucher.
    """
    text = code.strip()
    if voucher_device_id(text) != app.device_id:
        return CouponStatus("", "", 0, "foreign")
    claims = verify_voucher(app.keys.device_signing_key.public_key(), text)
    with app.db.read() as session:
        coupon = session.get(Coupon, claims.voucher_id)
        if coupon is None or claims.kind != "coupon":
            return CouponStatus("", "", 0, "unknown_coupon")
        if coupon.used_at is not None:
            error = "coupon_used"
        elif coupon.expires_at <= app.clock():
            error = "coupon_expired"
        else:
            error = ""
        return CouponStatus(coupon.id, coupon.sku, coupon.value_cents, error)


@dataclass(frozen=True)
class CouponUse:
    coupon_id: str
    sku: str
    value_cents: int
    used_at: datetime


def use_coupon(app: AppContext, code: str, ref: str, actor: str = "lane") -> CouponUse:
    """Validates and spends a coupon printed by this device: signed, unexpired, used once."""
    text = code.strip()
    if voucher_device_id(text) != app.device_id:
        raise Refusal(
            "this coupon was issued by another kiosk; check it with HQ", code="coupon_foreign"
        )
    public_key = app.keys.device_signing_key.public_key()
    claims = verify_voucher(public_key, text)
    if claims.kind != "coupon":
        raise Refusal("this is a gift voucher, not a coupon", code="not_a_coupon")
    with transaction(app) as tx:
        coupon = tx.session.get(Coupon, claims.voucher_id)
        if coupon is None:
            raise NotFound("unknown coupon", code="unknown_coupon")
        if coupon.used_at is not None:
            raise Refusal(
                f"coupon already used at {coupon.used_at.isoformat()}", code="coupon_used"
            )
        if coupon.expires_at <= tx.now:
            raise Refusal("coupon expired", code="coupon_expired")
        coupon.used_at = tx.now
        coupon.used_ref = ref[:64]
        tx.audit(actor, "coupon.use", coupon.id, ref=ref[:64])
        tx.emit(
            "coupon.used",
            {
                "coupon_id": coupon.id,
                "sku": coupon.sku,
                "value_cents": coupon.value_cents,
                "ref": ref[:64],
            },
        )
        return CouponUse(coupon.id, coupon.sku, coupon.value_cents, tx.now)
