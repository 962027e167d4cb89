"""Merging two member records of one person (合并会员): the rules, shared by HQ and the kiosks.

HQ merges; the kiosks apply what HQ sends. The absorbed member's balance moves to the kept one
by two ledger entries with the same ref (``merge:<merge id>``): ``merge_out`` on the absorbed
member, ``merge_in`` on the kept one. Neither belongs to a lot: the absorbed member's lots
move to the kept member whole, so each lot keeps its entries and its expiry. A negative
balance moves too (the overdraft follows the points).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge.domain.corrections import clean_note
from edge.domain.errors import InvalidInput, Refusal

MERGE_IN = "merge_in"
MERGE_OUT = "merge_out"
MERGE_KINDS = frozenset({MERGE_IN, MERGE_OUT})
MERGE_DEVICE = "hq-merge"  # the device id of the entries HQ books for a merge


class OldCards(StrEnum):
    """What becomes of the absorbed member's cards: they keep working as cards of the kept
    member, or they are blocked."""

    KEEP = "keep"
    BLOCK = "block"


@dataclass(frozen=True)
class MergeParty:
    """One of the two records as a merge sees it."""

    member_id: str
    balance: int
    deleted: bool
    merged_into: str | None
    known: bool = True  # False: known to HQ only from entries (never registered there)


def merge_ref(merge_id: str) -> str:
    """The ref both entries of a merge carry."""
    return f"merge:{merge_id}"


def merge_note(text: str | None) -> str:
    """A merge's note: required, one line of printable text."""
    note = clean_note(text or "")
    if not note:
        raise InvalidInput("a merge needs a note saying why (--note)", code="merge_note_missing")
    return note


def check_merge(keep: MergeParty, absorb: MergeParty) -> None:
    """Refuses a merge that must not happen, saying why in one line.

    Raises:
        Refusal: the same member twice, a member known only from entries, an erased member,
            or a member already merged into another.
    """
    if keep.member_id == absorb.member_id:
        raise Refusal(
            f"both name member {keep.member_id}: nothing to merge", code="merge_same_member"
        )
    for party, role in ((keep, "kept"), (absorb, "absorbed")):
        if not party.known:
            raise Refusal(
                f"the {role} member {party.member_id} was never registered at HQ",
                code="merge_unknown_member",
            )
        if party.deleted:
            raise Refusal(
                f"the {role} member {party.member_id} was erased", code="merge_member_deleted"
            )
        if party.merged_into is not None:
            raise Refusal(
                f"the {role} member {party.member_id} was merged into {party.merged_into} already",
                code="merge_already_merged",
            )


def merge_points(absorbed_balance: int) -> tuple[int, int]:
    """The points of (``merge_out``, ``merge_in``): the absorbed balance leaves one record and
    arrives at the other; ``(0, 0)`` when there is nothing to move (no entries then)."""
    return -absorbed_balance, absorbed_balance
