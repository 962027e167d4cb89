"""Merging two member records of one person at HQ (合并会员): ``kiosk hq member merge``.

One transaction: the absorbed member's balance moves to the kept member by two ledger entries
(``merge_out``, ``merge_in``, one merge id in their ref; :mod:`edge.domain.merges`), its lots,
cards and campaign coupons become the kept member's (the cards stay active, or are blocked,
as the operator chose), the absorbed record names the kept one (``merged_into``), and the
merge is recorded with both members before and after (``hq_member_merge``). A balance stays
the sum of its member's entries.

Every store that holds either member comes to hold both, and gets both members' snapshots in
its feed (numbers taken last, as for any feed item): their kiosks move the cards and lots
and mark the absorbed record merged (:func:`edge.services.replica.apply_snapshot`), so an
old card identifies the kept member there, or is refused as blocked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edge.domain.cards import CARD_LENGTH, CARD_PREFIX, CardState
from edge.domain.errors import NotFound
from edge.domain.ids import IdFactory
from edge.domain.merges import (
    MERGE_DEVICE,
    MERGE_IN,
    MERGE_OUT,
    MergeParty,
    OldCards,
    check_merge,
    merge_note,
    merge_points,
    merge_ref,
)
from hq.bulk import insert_rows
from hq.feeds import UNKNOWN_TIER, append, find_member, hold, holders, lock_members
from hq.ledger import add_to_balances, clear_alert, raise_alert
from hq.models import (
    CampaignCoupon,
    CentralCard,
    CentralEntry,
    CentralLot,
    CentralMember,
    MemberMerge,
)
from hq.rollups import Rollup


@dataclass(frozen=True)
class MergeReport:
    """What a merge did."""

    merge_id: str
    kept_member_id: str
    absorbed_member_id: str
    points: int
    old_cards: str
    cards: list[str] = field(default_factory=list)
    lots: int = 0
    coupons: int = 0
    kept_balance: int = 0
    overdraft: bool = False
    stores: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_member_id(session: Session, text: str) -> str:
    """The member a card number or a member id names (a card in any state).

    Raises:
        NotFound: no such card or member at HQ.
    """
    given = text.strip()
    digits = "".join(given.split())
    if (
        len(digits) == CARD_LENGTH
        and digits.isascii()
        and digits.isdigit()
        and digits.startswith(CARD_PREFIX)
    ):
        member_id = find_member(session, card_no=digits)
        if member_id is None:
            raise NotFound(f"no card {digits} at HQ", code="unknown_card")
        return member_id
    member_id = session.scalar(select(CentralMember.id).where(CentralMember.id == given.upper()))
    if member_id is None:
        raise NotFound(f"no member {given[:40]} at HQ", code="unknown_member")
    return member_id


def _state(session: Session, member: CentralMember) -> dict[str, Any]:
    """A member as the merge's record keeps them (before and after)."""
    cards = session.execute(
        select(CentralCard.card_no, CentralCard.state)
        .where(CentralCard.member_id == member.id)
        .order_by(CentralCard.card_no)
    ).all()
    lots = session.scalar(
        select(func.count()).select_from(CentralLot).where(CentralLot.member_id == member.id)
    )
    coupons = session.scalar(
        select(func.count())
        .select_from(CampaignCoupon)
        .where(CampaignCoupon.member_id == member.id)
    )
    return {
        "member_id": member.id,
        "balance": member.balance,
        "overdraft_flagged": member.overdraft_flagged,
        "merged_into": member.merged_into,
        "cards": {card_no: state for card_no, state in cards},
        "lots": int(lots or 0),
        "coupons": int(coupons or 0),
    }


def _party(member: CentralMember) -> MergeParty:
    return MergeParty(
        member_id=member.id,
        balance=member.balance,
        deleted=member.deleted,
        merged_into=member.merged_into,
        known=member.tier != UNKNOWN_TIER,
    )


def merge_members(
    session: Session,
    keep: str,
    absorb: str,
    old_cards: OldCards,
    note: str | None,
    actor: str,
    now: datetime,
    ids: IdFactory,
) -> MergeReport:
    """Merges the member ``absorb`` names into the one ``keep`` names (a card number or a
    member id each), in the caller's transaction; see the module's description.

    Raises:
        InvalidInput: no note.
        NotFound: no such card or member.
        Refusal: the same member twice, a member erased, known only from entries, or merged
            already (:func:`edge.domain.merges.check_merge`). Nothing is changed then.
    """
    why = merge_note(note)
    kept_id, absorbed_id = find_member_id(session, keep), find_member_id(session, absorb)
    lock_members(session, [kept_id, absorbed_id])
    members = {
        m.id: m
        for m in session.scalars(
            select(CentralMember)
            .where(CentralMember.id.in_([kept_id, absorbed_id]))
            .execution_options(populate_existing=True)
        )
    }
    kept, absorbed = members[kept_id], members[absorbed_id]
    check_merge(_party(kept), _party(absorbed))
    before = {"kept": _state(session, kept), "absorbed": _state(session, absorbed)}

    merge_id = ids.new()
    points_out, points_in = merge_points(absorbed.balance)
    rollup = Rollup()  # for the reports: the two entries, and a member fewer
    rollup.departed(now, absorbed.store_id)
    if points_in:
        ref = merge_ref(merge_id)
        moves = ((absorbed, MERGE_OUT, points_out), (kept, MERGE_IN, points_in))
        insert_rows(
            session.connection(),
            CentralEntry,
            [
                {"id": ids.new(), "member_id": m.id, "kind": kind, "points": points,
                 "lot_id": None, "ref": ref, "store_id": m.store_id,
                 "device_id": MERGE_DEVICE, "at": now, "event_id": merge_id,
                 "available_at": None, "expires_at": None, "tier": m.tier}
                for m, kind, points in moves
            ],
        )  # fmt: skip
        add_to_balances(session, {absorbed.id: points_out, kept.id: points_in}, now)
        for m, kind, points in moves:
            rollup.entry(now, m.store_id, m.tier, kind, points)
    cards = list(
        session.scalars(
            select(CentralCard.card_no)
            .where(CentralCard.member_id == absorbed.id)
            .order_by(CentralCard.card_no)
        )
    )
    if old_cards == OldCards.BLOCK:
        session.execute(
            update(CentralCard)
            .where(CentralCard.member_id == absorbed.id, CentralCard.state == CardState.ACTIVE)
            .values(state=CardState.BLOCKED)
        )
    session.execute(
        update(CentralCard).where(CentralCard.member_id == absorbed.id).values(member_id=kept.id)
    )
    lots = before["absorbed"]["lots"]
    coupons = before["absorbed"]["coupons"]
    session.execute(
        update(CentralLot).where(CentralLot.member_id == absorbed.id).values(member_id=kept.id)
    )
    session.execute(
        update(CampaignCoupon)
        .where(CampaignCoupon.member_id == absorbed.id)
        .values(member_id=kept.id)
    )
    session.flush()
    session.refresh(kept)
    session.refresh(absorbed)
    absorbed.merged_into = kept.id
    absorbed.updated_at = kept.updated_at = now
    # The overdraft follows the points: the absorbed record owes nothing now.
    if absorbed.overdraft_flagged and absorbed.balance >= 0:
        absorbed.overdraft_flagged = False
        clear_alert(session, "overdraft", absorbed.id, now)
    if kept.balance < 0 and not kept.overdraft_flagged:
        kept.overdraft_flagged = True
        raise_alert(
            session,
            "overdraft",
            kept.id,
            f"balance {kept.balance}: owed points of member {absorbed.id} merged in",
            now,
            kept.store_id,
        )
    session.flush()
    after = {"kept": _state(session, kept), "absorbed": _state(session, absorbed)}
    session.add(
        MemberMerge(
            merge_id=merge_id,
            at=now,
            kept_member_id=kept.id,
            absorbed_member_id=absorbed.id,
            points=points_in,
            old_cards=old_cards.value,
            note=why,
            actor=actor[:64],
            before=json.dumps(before, sort_keys=True),
            after=json.dumps(after, sort_keys=True),
        )
    )
    session.flush()
    # The rollups after every other row the merge changes, before the feeds' numbers: the
    # order the ingest takes them in (hq.rollups).
    rollup.write(session)
    # Every store that holds either member holds both from now on and gets both snapshots
    # (the feed's numbers last in the transaction).
    held = holders(session, [kept.id, absorbed.id])
    stores = sorted(
        held.get(kept.id, set()) | held.get(absorbed.id, set()) | {kept.store_id, absorbed.store_id}
    )
    hold(session, [(m, s) for s in stores for m in (absorbed.id, kept.id)], now)
    append(session, {s: [(None, absorbed.id), (None, kept.id)] for s in stores})
    return MergeReport(
        merge_id=merge_id,
        kept_member_id=kept.id,
        absorbed_member_id=absorbed.id,
        points=points_in,
        old_cards=old_cards.value,
        cards=cards,
        lots=int(lots or 0),
        coupons=int(coupons or 0),
        kept_balance=kept.balance,
        overdraft=kept.overdraft_flagged,
        stores=stores,
    )
