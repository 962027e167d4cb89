"""Corrections at the member desk: points adjustments, returns, overdraft settlement.

The rules only: which reasons there are, when a second staff member must approve, and how
many of a receipt's points a (partial) refund takes back. Amounts are integers throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge.domain.errors import InvalidInput
from edge.domain.points import MAX_PURCHASE_CENTS

MAX_ADJUST_POINTS = 1_000_000
MAX_NOTE = 200


class Reason(StrEnum):
    """Why points were adjusted; shown in the member's history and counted at HQ."""

    MISSED_POINTS = "missed_points"  # 漏积分补录: a purchase that earned nothing
    GOODWILL = "goodwill"  # 服务补偿: an apology for a bad experience
    CORRECTION = "correction"  # 错误更正: points credited or taken in error
    OVERDRAFT_SETTLED = "overdraft_settled"  # 透支结清: the member made the overdraft good
    OVERDRAFT_WRITTEN_OFF = "overdraft_written_off"  # 透支核销: the chain absorbs it


SETTLEMENT_REASONS = frozenset({Reason.OVERDRAFT_SETTLED, Reason.OVERDRAFT_WRITTEN_OFF})
# what a plain adjustment may give as its reason (a settlement says how it was settled)
ADJUSTMENT_REASONS = frozenset(Reason) - SETTLEMENT_REASONS


def parse_reason(text: str, allowed: frozenset[Reason] = ADJUSTMENT_REASONS) -> Reason:
    try:
        reason = Reason(text.strip().lower())
    except ValueError:
        reason = None
    if reason is None or reason not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise InvalidInput(f"unknown reason '{text}' (one of: {names})", code="bad_reason")
    return reason


def reason_of(ref: str) -> Reason | None:
    """The reason an adjustment's ledger entry names in its ref (``reason:adjustment id``)."""
    head, sep, _ = ref.partition(":")
    try:
        return Reason(head) if sep else None
    except ValueError:
        return None


def history_key(kind: str, ref: str) -> str:
    """What names a history line: an adjustment's reason when its ref gives one, else the
    entry's kind (the screen and the slip each have their words for both)."""
    reason = reason_of(ref) if kind == "adjustment" else None
    return reason.value if reason is not None else kind


def clean_note(text: str) -> str:
    """A free note: one line of printable text, at most :data:`MAX_NOTE` characters."""
    note = " ".join(text.split())
    if len(note) > MAX_NOTE or not note.isprintable():
        raise InvalidInput(
            f"a note is one line of at most {MAX_NOTE} printable characters", code="bad_note"
        )
    return note


def adjustment_points(value: int) -> int:
    """A signed, nonzero number of points within bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("points must be a whole number", code="bad_points")
    if value == 0 or abs(value) > MAX_ADJUST_POINTS:
        raise InvalidInput(
            f"an adjustment moves between 1 and {MAX_ADJUST_POINTS:,} points, up or down",
            code="bad_points",
        )
    return value


def needs_approval(points: int, approval_above: int) -> bool:
    """A second staff member (a supervisor) approves an adjustment larger than this."""
    return abs(points) > approval_above


@dataclass(frozen=True)
class RefundShare:
    """What a refund takes back: the points, and the receipt's refunded total after it."""

    points: int
    refunded_cents: int


def refund_amount(amount_cents: int) -> int:
    """Money a refund returns: whole cents, positive, no more than a purchase can be."""
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise InvalidInput("a refund amount must be whole cents", code="bad_amount")
    if not 0 < amount_cents <= MAX_PURCHASE_CENTS:
        raise InvalidInput("a refund amount must be positive", code="bad_amount")
    return amount_cents


def refund_share(
    purchase_cents: int, purchase_points: int, refunded_cents: int, amount_cents: int
) -> RefundShare:
    """The points a refund of ``amount_cents`` takes back from a receipt.

    In proportion to the money returned, rounded so that refunds of a receipt in parts take
    back exactly what one full refund would: each refund takes the floor of the cumulative
    share less what earlier refunds took. Refuses a refund larger than what is left.
    """
    refund_amount(amount_cents)
    left = purchase_cents - refunded_cents
    if amount_cents > left:
        raise InvalidInput(
            f"the refund ({amount_cents} cents) is larger than what is left of the receipt "
            f"({left} of {purchase_cents} cents)",
            code="refund_too_large",
            left_cents=left,
        )
    after = refunded_cents + amount_cents
    taken = purchase_points * after // purchase_cents - purchase_points * refunded_cents // (
        purchase_cents
    )
    return RefundShare(taken, after)
