"""HQ's coupon campaigns: templates, coupons issued into members' wallets, and one use each
in the whole chain.

A campaign says what its coupons give (:mod:`edge.domain.coupons`), who gets them and how
many there are. ``kiosk hq campaign issue`` gives them to an audience (every member, a tier,
the members whose birthday is this month); the campaigns for new members and referrals give
theirs as HQ stores each registration. A coupon is a row here; its code is HQ's signature
over its id (made again when a wallet is shown: Ed25519 signs the same bytes the same way),
so a kiosk of any store verifies it offline with HQ's public key.

Single use: a kiosk asks HQ to ``use`` a coupon before the lane takes it, and HQ records the
first use with a guarded UPDATE (``used_at IS NULL``), so of two stores using one coupon at
the same moment one is told it was used. A kiosk that could not reach HQ may accept a few
coupons offline; their ``coupon.used`` events tell HQ later, and a coupon used twice raises
``coupon_used_twice``.

Pools and per-member limits hold with several HQ workers: an issuer locks the campaign's
row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer) before it counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, Select, func, select, text, update
from sqlalchemy.orm import Session

from edge.domain.coupons import (
    AT_REGISTRATION,
    HQ_ISSUER,
    MAX_PER_MEMBER,
    MAX_POOL,
    Audience,
    CouponKind,
    Terms,
    campaign_of,
    check_campaign_id,
    check_terms,
    coupon_id,
    usable,
)
from edge.domain.errors import InvalidInput, KioskError, NotFound
from edge.domain.ids import IdFactory
from edge.protocol import (
    Campaigns,
    CampaignTerms,
    CouponAnswer,
    CouponAsk,
    CouponUsedData,
    Event,
    MemberRegisteredData,
    WalletCoupon,
)
from edge.security.codes import sign_voucher
from hq import audit, device_coupons
from hq.audit import Actor
from hq.bulk import among, insert_rows
from hq.device_coupons import UseAlert, mark_used, used_again, used_refusal
from hq.models import Campaign, CampaignCoupon, CentralMember, ChainCounter

CAMPAIGNS_VERSION = "campaigns"  # the counter row numbering the campaigns document
SHOWN_AFTER_END = timedelta(days=90)  # a campaign stays in the document this long after
ISSUE_CHUNK = 2000
WALLET_MAX = 200


@dataclass(frozen=True)
class CampaignSpec:
    """A new campaign as HQ's staff define it."""

    terms: Terms
    audience: Audience
    audience_tier: str | None = None
    pool_total: int = 1000
    per_member_limit: int = 1


@dataclass(frozen=True)
class IssueReport:
    campaign_id: str
    issued: int
    at_limit: int  # members who already had as many as the campaign allows
    pool_left: int


def terms_of(c: Campaign) -> Terms:
    return Terms(
        campaign_id=c.campaign_id,
        title=c.title,
        kind=CouponKind(c.kind),
        value_cents=c.value_cents,
        threshold_cents=c.threshold_cents,
        percent=c.percent,
        gift_sku=c.gift_sku,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        finished=c.finished_at is not None,
    )


def terms_message(terms: Terms) -> CampaignTerms:
    return CampaignTerms(
        campaign_id=terms.campaign_id,
        title=terms.title,
        kind=terms.kind.value,
        value_cents=terms.value_cents,
        threshold_cents=terms.threshold_cents,
        percent=terms.percent,
        gift_sku=terms.gift_sku,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        finished=terms.finished,
    )


def _next_version(session: Session) -> int:
    """One more on the campaigns document's version (the counter row is made once)."""
    if session.get(ChainCounter, CAMPAIGNS_VERSION) is None:
        session.add(ChainCounter(name=CAMPAIGNS_VERSION, value=0))
        session.flush()
    moved = session.execute(
        update(ChainCounter)
        .where(ChainCounter.name == CAMPAIGNS_VERSION)
        .values(value=ChainCounter.value + 1)
        .returning(ChainCounter.value)
    ).scalar_one()
    return int(moved)


def campaigns_version(session: Session) -> int:
    row = session.get(ChainCounter, CAMPAIGNS_VERSION)
    return int(row.value) if row is not None else 0


def create_campaign(session: Session, spec: CampaignSpec, by: Actor, now: datetime) -> Campaign:
    """Saves a new campaign (its coupons are issued afterwards), recorded in HQ's audit log.

    Raises:
        InvalidInput: the terms, audience, pool or limit do not make sense, or the campaign
            id is taken (``campaign_exists``).
    """
    terms = check_terms(spec.terms)
    if terms.valid_until <= now:
        raise InvalidInput(
            f"campaign {terms.campaign_id} would end before it is created", code="bad_campaign"
        )
    if (spec.audience == Audience.TIER) != bool(spec.audience_tier):
        raise InvalidInput(
            "a tier campaign names its tier (--tier), and only a tier campaign does",
            code="bad_campaign",
        )
    if not 1 <= spec.pool_total <= MAX_POOL:
        raise InvalidInput(f"the pool must be 1-{MAX_POOL} coupons", code="bad_campaign")
    if not 1 <= spec.per_member_limit <= MAX_PER_MEMBER:
        raise InvalidInput(f"the limit per member must be 1-{MAX_PER_MEMBER}", code="bad_campaign")
    if session.get(Campaign, terms.campaign_id) is not None:
        raise InvalidInput(f"campaign {terms.campaign_id} exists already", code="campaign_exists")
    campaign = Campaign(
        campaign_id=terms.campaign_id,
        title=terms.title.strip(),
        kind=terms.kind.value,
        value_cents=terms.value_cents,
        threshold_cents=terms.threshold_cents,
        percent=terms.percent,
        gift_sku=terms.gift_sku.strip(),
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        audience=spec.audience.value,
        audience_tier=spec.audience_tier,
        pool_total=spec.pool_total,
        per_member_limit=spec.per_member_limit,
        issued=0,
        created_at=now,
        created_by=by.name[:64],
    )
    session.add(campaign)
    session.flush()
    _next_version(session)
    audit.record(
        session,
        by,
        "campaign.create",
        campaign.campaign_id,
        now,
        after={
            "title": campaign.title,
            "kind": campaign.kind,
            "value_cents": campaign.value_cents,
            "threshold_cents": campaign.threshold_cents,
            "percent": campaign.percent,
            "gift_sku": campaign.gift_sku,
            "valid_from": campaign.valid_from,
            "valid_until": campaign.valid_until,
            "audience": campaign.audience,
            "audience_tier": campaign.audience_tier,
            "pool_total": campaign.pool_total,
            "per_member_limit": campaign.per_member_limit,
        },
    )
    return campaign


def get_campaign(session: Session, campaign_id: str, lock: bool = False) -> Campaign:
    """Raises: NotFound ``unknown_campaign``."""
    query = select(Campaign).where(Campaign.campaign_id == check_campaign_id(campaign_id))
    found = session.scalars(query.with_for_update() if lock else query).first()
    if found is None:
        raise NotFound(f"no campaign {campaign_id!r}", code="unknown_campaign")
    return found


def finish_campaign(session: Session, campaign_id: str, by: Actor, now: datetime) -> Campaign:
    """Ends a campaign now: its coupons are refused from here on, at every kiosk once the
    campaigns document reaches it (HQ refuses them at once).

    Raises:
        NotFound: no such campaign. InvalidInput: ``campaign_finished`` already.
    """
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.finished_at is not None:
        raise InvalidInput(
            f"campaign {campaign.campaign_id} finished already at "
            f"{campaign.finished_at.isoformat()}",
            code="campaign_finished",
        )
    campaign.finished_at, campaign.finished_by = now, by.name[:64]
    _next_version(session)
    audit.record(
        session,
        by,
        "campaign.finish",
        campaign.campaign_id,
        now,
        before={"finished_at": None},
        after={"finished_at": now, "issued": campaign.issued},
    )
    return campaign


def campaigns_document(session: Session, now: datetime) -> Campaigns:
    """Every campaign whose coupons a till may still meet (running, or ended in the last 90
    days, finished ones marked so), unsigned, at the current version."""
    rows = session.scalars(
        select(Campaign)
        .where(Campaign.valid_until > now - SHOWN_AFTER_END)
        .order_by(Campaign.campaign_id)
        .limit(1000)
    ).all()
    return Campaigns(
        version=max(1, campaigns_version(session)),
        issued_at=now,
        campaigns=[terms_message(terms_of(c)) for c in rows],
    )


def _running(campaign: Campaign, now: datetime) -> bool:
    return campaign.finished_at is None and now < campaign.valid_until


def issue_to(
    session: Session, campaign_id: str, member_ids: Sequence[str], now: datetime, ids: IdFactory
) -> IssueReport:
    """One coupon of the campaign to each of ``member_ids`` who has fewer than its limit,
    while the pool lasts (the campaign's row is locked first, so counts hold with several
    writers).

    Raises:
        NotFound: no such campaign. InvalidInput: ``campaign_finished`` when it ended.
    """
    campaign = get_campaign(session, campaign_id, lock=True)
    if not _running(campaign, now):
        raise InvalidInput(
            f"campaign {campaign.campaign_id} has ended; it issues no more coupons",
            code="campaign_finished",
        )
    conn = session.connection()
    wanted = sorted(set(member_ids))
    held: dict[str, int] = {}
    for start in range(0, len(wanted), 900):
        chunk = wanted[start : start + 900]
        held.update(
            conn.execute(
                select(CampaignCoupon.member_id, func.count())
                .where(
                    CampaignCoupon.campaign_id == campaign.campaign_id,
                    among(conn, CampaignCoupon.member_id, chunk),
                )
                .group_by(CampaignCoupon.member_id)
            )
            .tuples()
            .all()
        )
    eligible = [m for m in wanted if held.get(m, 0) < campaign.per_member_limit]
    take = eligible[: max(0, campaign.pool_total - campaign.issued)]
    if take:
        insert_rows(
            conn,
            CampaignCoupon,
            [
                {
                    "coupon_id": coupon_id(campaign.campaign_id, ids.new()),
                    "campaign_id": campaign.campaign_id,
                    "member_id": m,
                    "issued_at": now,
                    "used_offline": False,
                }
                for m in take
            ],
        )
        campaign.issued += len(take)
    return IssueReport(
        campaign.campaign_id,
        len(take),
        len(wanted) - len(eligible),
        campaign.pool_total - campaign.issued,
    )


def audience_members(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """The members an audience campaign goes to, now (not those removed)."""
    query = select(CentralMember.id).where(CentralMember.deleted.is_(False))
    audience = Audience(campaign.audience)
    if audience == Audience.TIER:
        query = query.where(CentralMember.tier == campaign.audience_tier)
    elif audience == Audience.BIRTHDAY_MONTH:
        query = query.where(CentralMember.birth_month == now.month)
    elif audience != Audience.ALL:
        raise InvalidInput(
            f"campaign {campaign.campaign_id} goes to {audience.value}: its coupons are issued "
            "as members register, not all at once",
            code="bad_audience",
        )
    return list(session.scalars(query.order_by(CentralMember.id)))


def issue_campaign(
    engine: Engine,
    campaign_id: str,
    now: datetime,
    ids: IdFactory,
    member_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    actor: Actor | None = None,
) -> IssueReport:
    """Issues the campaign to its audience (or to ``member_ids``), a chunk of members per
    transaction, so a large audience neither holds a lock for long nor starts over when it is
    run again (the per-member limit skips those who have theirs). A run by ``actor`` is
    recorded in HQ's audit log once it has finished, with what it issued."""
    with Session(engine) as session:
        campaign = get_campaign(session, campaign_id)
        targets = list(member_ids) if member_ids is not None else None
        if targets is None:
            targets = audience_members(session, campaign, now)
        else:
            known = set()
            for start in range(0, len(targets), 900):
                chunk = targets[start : start + 900]
                known |= set(
                    session.scalars(
                        select(CentralMember.id).where(
                            CentralMember.id.in_(chunk), CentralMember.deleted.is_(False)
                        )
                    )
                )
            missing = [m for m in targets if m not in known]
            if missing:
                raise NotFound(f"no member {missing[0]} at HQ", code="unknown_member")
    issued = at_limit = 0
    pool_left = 0
    report = IssueReport(campaign_id, 0, 0, 0)
    for n, start in enumerate(range(0, max(1, len(targets)), ISSUE_CHUNK), start=1):
        with Session(engine) as session, session.begin():
            report = issue_to(session, campaign_id, targets[start : start + ISSUE_CHUNK], now, ids)
        if engine.dialect.name == "postgresql" and n & (n - 1) == 0:
            # PostgreSQL's statistics lag behind a table growing this fast: planned as the
            # handful of rows it had, each chunk's "coupons these members hold" would read
            # every coupon of the campaign so far (a run growing with the square of its
            # size). Counted again after 1, 2, 4, 8 ... chunks, it is an index lookup.
            with engine.begin() as conn:
                conn.execute(text("ANALYZE hq_coupon"))
        issued += report.issued
        at_limit += report.at_limit
        pool_left = report.pool_left
        progress(min(len(targets), start + ISSUE_CHUNK), len(targets))
        if pool_left == 0:
            break
    done = IssueReport(report.campaign_id, issued, at_limit, pool_left)
    if actor is not None:
        with Session(engine) as session, session.begin():
            audit.record(
                session,
                actor,
                "campaign.issue",
                campaign_id,
                now,
                after={
                    "to": "audience" if member_ids is None else "named members",
                    "members": len(targets),
                    "issued": done.issued,
                    "at_limit": done.at_limit,
                    "pool_left": done.pool_left,
                },
            )
    return done


def issue_at_registration(
    session: Session, registrations: Iterable[tuple[Event, MemberRegisteredData]], ids: IdFactory
) -> int:
    """The coupons of the running new-member and referral campaigns for each registration
    (a registration counts when it was made while the campaign ran); how many were issued."""
    listed = list(registrations)
    if not listed:
        return 0
    campaigns = session.scalars(
        select(Campaign).where(
            Campaign.audience.in_([a.value for a in AT_REGISTRATION]),
            Campaign.finished_at.is_(None),
        )
    ).all()
    issued = 0
    for campaign in campaigns:
        audience = Audience(campaign.audience)
        members: list[str] = []
        for event, data in listed:
            if not campaign.valid_from <= event.at < campaign.valid_until:
                continue
            referred = audience == Audience.REFERRED and data.referrer_id
            if audience == Audience.NEW_MEMBERS or referred:
                members.append(data.member_id)
            elif audience == Audience.REFERRER and data.referrer_id:
                members.append(data.referrer_id)
        if members:
            now = max(event.at for event, _ in listed)
            issued += _issue_each(session, campaign.campaign_id, members, now, ids)
    return issued


def _issue_each(
    session: Session, campaign_id: str, members: list[str], now: datetime, ids: IdFactory
) -> int:
    """A coupon per entry of ``members`` (a referrer may be named twice in one batch)."""
    issued = 0
    while members:
        once = list(dict.fromkeys(members))
        issued += issue_to(session, campaign_id, once, now, ids).issued
        for m in once:
            members.remove(m)
    return issued


# --------------------------------------------------------------------------- wallets and uses


def sign_coupon(key: Ed25519PrivateKey, coupon: str) -> str:
    """The code of an HQ coupon: HQ's signature over its id, as kiosks verify it."""
    return sign_voucher(key, "coupon", coupon, HQ_ISSUER)


def usable_coupons(member_id: str, now: datetime) -> Select[tuple[CampaignCoupon, Campaign]]:
    """The member's coupons not used yet, of campaigns still running, with their campaign
    (the wallet, and the member page, order and count them their own way)."""
    return (
        select(CampaignCoupon, Campaign)
        .join(Campaign, Campaign.campaign_id == CampaignCoupon.campaign_id)
        .where(
            CampaignCoupon.member_id == member_id,
            CampaignCoupon.used_at.is_(None),
            Campaign.finished_at.is_(None),
            Campaign.valid_until > now,
        )
    )


def wallet(
    session: Session, member_id: str, now: datetime, key: Ed25519PrivateKey
) -> list[WalletCoupon]:
    """The member's coupons that can still be used (or soon: not yet valid), newest first."""
    rows = session.execute(
        usable_coupons(member_id, now)
        .order_by(CampaignCoupon.issued_at.desc(), CampaignCoupon.coupon_id)
        .limit(WALLET_MAX)
    ).tuples()
    return [
        WalletCoupon(
            coupon_id=c.coupon_id,
            code=sign_coupon(key, c.coupon_id),
            terms=terms_message(terms_of(campaign)),
            issued_at=c.issued_at,
        )
        for c, campaign in rows
    ]


def answer(
    session: Session,
    ask: CouponAsk,
    device_id: str,
    now: datetime,
    key: Ed25519PrivateKey | None,
) -> CouponAnswer:
    """HQ's answer to a kiosk: a member's wallet, or whether one coupon can be used (and,
    for ``use``, recorded used at the kiosk now, once in the chain)."""
    base: dict[str, Any] = {
        "action": ask.action,
        "member_id": ask.member_id,
        "coupon_id": ask.coupon_id,
    }
    if ask.action == "wallet":
        if key is None:
            return CouponAnswer(
                **base, ok=False, error="no_signing_key",
                message="HQ has no key to sign coupons with", at=now,
            )  # fmt: skip
        assert ask.member_id is not None
        coupons = wallet(session, ask.member_id, now, key)
        return CouponAnswer(**base, ok=True, coupons=coupons, at=now)
    assert ask.coupon_id is not None
    if ask.code and campaign_of(ask.coupon_id) is None:
        return device_coupons.answer(session, ask, device_id, now)
    try:
        coupon = _usable_coupon(session, ask.coupon_id, now)
    except KioskError as exc:
        return _refused(base, exc, now, session, ask.coupon_id)
    if ask.action == "use" and not mark_used(
        session, CampaignCoupon, [CampaignCoupon.coupon_id == coupon.coupon_id],
        at=now, store_id=ask.store_id, device_id=device_id, ref=ask.ref, offline=False,
    ):  # fmt: skip
        # another store used it a moment ago
        session.expire(coupon)
        return _refused(base, used_refusal(coupon), now, session, ask.coupon_id)
    terms = terms_message(terms_of(get_campaign(session, coupon.campaign_id)))
    return CouponAnswer(**base, ok=True, terms=terms, at=now)


def _usable_coupon(session: Session, coupon: str, now: datetime) -> CampaignCoupon:
    found = session.get(CampaignCoupon, coupon)
    if found is None or campaign_of(coupon) != found.campaign_id:
        raise NotFound("HQ has no such coupon", code="unknown_coupon")
    if found.used_at is not None:
        raise used_refusal(found)
    usable(terms_of(get_campaign(session, found.campaign_id)), now)
    return found


def _refused(
    base: dict[str, Any], exc: KioskError, now: datetime, session: Session, coupon: str
) -> CouponAnswer:
    found = session.get(CampaignCoupon, coupon) if exc.code == "coupon_used" else None
    return CouponAnswer(
        **base,
        ok=False,
        error=exc.code,
        message=exc.message[:256],
        used_store_id=found.used_store_id if found else None,
        used_at=found.used_at if found else None,
        at=now,
    )


def record_use(session: Session, event: Event, data: CouponUsedData) -> UseAlert | None:
    """A ``coupon.used`` event: the use HQ granted (nothing to do), a use accepted offline
    (recorded now, as the first if it is), or a second use (an alert); a coupon a kiosk
    printed goes to :func:`hq.device_coupons.record_use`."""
    if data.issuer != HQ_ISSUER:
        return device_coupons.record_use(session, event, data)
    coupon = session.get(CampaignCoupon, data.coupon_id)
    if coupon is None:
        return UseAlert(
            "coupon_unknown",
            data.coupon_id,
            f"{event.device_id} accepted coupon {data.coupon_id}, which HQ never issued",
        )
    key = [CampaignCoupon.coupon_id == coupon.coupon_id]
    if not used_again(session, coupon, key, event, data):
        return None
    return UseAlert(
        "coupon_used_twice",
        coupon.coupon_id,
        f"coupon {coupon.coupon_id} used at {coupon.used_store_id} ({coupon.used_device_id}) "
        f"and again at {event.store_id} ({event.device_id}"
        f"{', offline' if data.offline else ''})",
    )
