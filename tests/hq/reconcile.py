"""A realistic chain's events for the reports' tests, and the reports worked out again from
the ledger itself, in plain Python, to compare them with (the reports read rollups).

:func:`make_chain` gives four devices of three stores five weeks of a member center's
events, cut into batches and delivered interleaved, some twice: registrations (some arriving
after another store's entries for the member), purchases, check-ins, birthdays, referrals,
gift and coupon redemptions over several lots, vouchers lapsing with their points given
back, expiries, refunds, adjustments both ways, tier changes, erasures, a kind of entry HQ
does not know, and entries for a member whose registration never comes. Times are written
in UTC or in Shanghai time, many close to midnight UTC, so a wrong day shows.

The ``expected_*`` functions read ``hq_entry``, ``hq_event``, ``hq_member`` and
``hq_member_merge`` as rows and sum them with their own definitions: nothing of
:mod:`hq.rollups` or :mod:`hq.reports` but the row types compared against.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from edge.domain.ids import IdFactory
from edge.protocol import Event, EventBatch
from hq.reports import CheckinRow, GiftRow, MemberRow, OutstandingRow, Period, PointsRow

ids = IdFactory()
SHANGHAI = timezone(timedelta(hours=8))
START = datetime(2026, 2, 20, 0, 0, tzinfo=UTC)
DAYS = 35
DEVICES = [("K001", "S001"), ("K002", "S001"), ("K003", "S002"), ("K004", "S003")]
TIERS = ["normal", "silver", "gold"]
GIFTS = [("G-TEA", "Tea set"), ("G-MUG", "Mug"), ("C-5OFF", "5 yuan coupon")]
EARNED = ("purchase", "checkin", "birthday", "referral")


@dataclass
class Member:
    member_id: str
    card_no: str
    device: str
    registered: bool = False
    erased: bool = False


@dataclass
class Chain:
    """Every device's events, and the batches as HQ receives them."""

    events: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    deliveries: list[tuple[str, EventBatch]] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)


def _when(rng: random.Random, day: int) -> datetime:
    """A moment of the day, often close to midnight UTC (08:00 in Shanghai)."""
    if rng.random() < 0.3:
        second = rng.choice([rng.randint(0, 120), rng.randint(86_280, 86_399)])
    else:
        second = rng.randint(0, 86_399)
    return START + timedelta(days=day, seconds=second)


def _stamp(rng: random.Random, at: datetime) -> str:
    """The time as a device writes it: in UTC or in Shanghai time (the same moment)."""
    return (at.astimezone(SHANGHAI) if rng.random() < 0.5 else at).isoformat()


def _entry(
    rng: random.Random, member: str, kind: str, points: int, device: str, store: str, at: datetime
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": ids.new(),
        "member_id": member,
        "kind": kind,
        "points": points,
        "lot_id": ids.new(),
        "ref": f"r{rng.randint(1, 10**6)}",
        "at": _stamp(rng, at),
        "store_id": store,
        "device_id": device,
    }
    if points > 0:
        e |= {"available_at": e["at"], "expires_at": (at + timedelta(days=365)).isoformat()}
    return e


def make_chain(seed: int, per_device: int = 120) -> Chain:
    """See the module's description; the same seed makes the same chain."""
    rng = random.Random(seed)
    chain = Chain()
    card = 290_000_000_000
    for device, _store in DEVICES:
        for _ in range(6):
            card += 1
            chain.members.append(Member(ids.new(), str(card), device))
    redemptions: dict[str, list[tuple[Member, str, str, int, int]]] = defaultdict(list)
    for device, store in DEVICES:
        events = chain.events[device]

        def add(kind: str, data: dict[str, Any], at: datetime, device: str = device,
                store: str = store, events: list[Event] = events) -> None:  # fmt: skip
            stamp = _stamp(rng, at)
            events.append(
                Event(event_id=ids.new(), kind=kind, store_id=store, device_id=device,
                      at=datetime.fromisoformat(stamp), data=data, seq=len(events) + 1)
            )  # fmt: skip

        own = [m for m in chain.members if m.device == device]
        for m in own:
            at = _when(rng, rng.randint(0, 3))
            welcome = (
                [_entry(rng, m.member_id, "referral", 50, device, store, at)]
                if rng.random() < 0.3
                else []
            )
            add("member.registered",
                {"member_id": m.member_id, "card_no": m.card_no, "tier": rng.choice(TIERS),
                 "consent_version": "2026-01", "entries": welcome}, at)  # fmt: skip
            m.registered = True
        stranger = ids.new()  # entries for a member whose registration never comes
        day = 4
        for _ in range(per_device):
            day = min(DAYS - 1, day + (1 if rng.random() < 0.3 else 0))
            at = _when(rng, day)
            roll = rng.random()
            everyone = [m for m in chain.members if not m.erased]
            m = rng.choice(own if rng.random() < 0.7 else everyone)
            mid, cno = m.member_id, m.card_no

            def one(kind: str, points: int, mid: str = mid, at: datetime = at,
                    device: str = device, store: str = store) -> list[dict]:  # fmt: skip
                return [_entry(rng, mid, kind, points, device, store, at)]

            if roll < 0.35:
                add("points.accrued", {"member_id": mid, "card_no": cno,
                    "entries": one("purchase", rng.choice([120, 45, 300, 18]))}, at)  # fmt: skip
            elif roll < 0.47:
                add("points.checkin", {"member_id": mid, "card_no": cno,
                    "entries": one("checkin", 10)}, at)  # fmt: skip
            elif roll < 0.5:
                add("points.birthday", {"member_id": mid, "card_no": cno,
                    "entries": one("birthday", 200)}, at)  # fmt: skip
            elif roll < 0.62:
                sku, name = rng.choice(GIFTS)
                qty = rng.randint(1, 2)
                parts = [rng.randint(20, 150) for _ in range(rng.randint(1, 3))]
                rid = ids.new()
                entries = [_entry(rng, mid, "redemption", -p, device, store, at) for p in parts]
                add("gift.redeemed", {"member_id": mid, "card_no": cno, "redemption_id": rid,
                    "sku": sku, "name": name, "qty": qty, "points": sum(parts),
                    "entries": entries}, at)  # fmt: skip
                redemptions[device].append((m, rid, sku, qty, sum(parts)))
            elif roll < 0.66 and redemptions[device]:
                lapsed_m, rid, sku, qty, points = redemptions[device].pop(0)
                back = points if rng.random() < 0.7 else 0
                entries = (
                    [_entry(rng, lapsed_m.member_id, "voucher_return", back, device, store, at)]
                    if back
                    else []
                )
                add("gift.voucher_lapsed", {"member_id": lapsed_m.member_id,
                    "card_no": lapsed_m.card_no, "redemption_id": rid, "sku": sku, "qty": qty,
                    "points_returned": back, "entries": entries}, at)  # fmt: skip
            elif roll < 0.72:
                add("points.expired", {"member_id": mid, "entries": [
                    _entry(rng, mid, "expiry", -rng.randint(5, 80), device, store, at)
                    for _ in range(rng.randint(1, 2))]}, at)  # fmt: skip
            elif roll < 0.78:
                add("points.refunded", {"member_id": mid, "card_no": cno,
                    "refund_id": f"F{rng.randint(1, 10**6)}",
                    "receipt_id": f"R{rng.randint(1, 10**6)}", "amount_cents": 1990,
                    "entries": one("refund", -rng.randint(5, 60))}, at)  # fmt: skip
            elif roll < 0.83:
                points = rng.choice([100, -40, 25, -300])
                add("points.adjusted", {"member_id": mid, "adjustment_id": ids.new(),
                    "reason": "goodwill", "staff_id": "ST01",
                    "entries": one("adjustment", points)}, at)  # fmt: skip
            elif roll < 0.87 and m.device == device and m.registered:
                add("member.tier_changed", {"member_id": mid, "after": rng.choice(TIERS)}, at)
            elif roll < 0.885 and m.device == device and not m.erased:
                add("member.deleted", {"member_id": mid, "cards_blocked": [cno]}, at)
                m.erased = True
            elif roll < 0.92:
                add("points.accrued", {"member_id": stranger, "entries": one(
                    "purchase", 33, mid=stranger)}, at)  # fmt: skip
            elif roll < 0.94:
                add("points.accrued", {"member_id": mid, "card_no": cno,
                    "entries": one("promo", 15)}, at)  # fmt: skip
            else:
                add("points.accrued", {"member_id": mid, "card_no": cno,
                    "entries": one("purchase", rng.randint(1, 500))}, at)  # fmt: skip
    # Batches of 1-8 events; the devices' batches interleaved, each device's in order, some
    # delivered again later (a resend after a lost acknowledgement).
    queues: dict[str, list[EventBatch]] = {}
    for device, events in chain.events.items():
        batches, start = [], 0
        while start < len(events):
            size = rng.randint(1, 8)
            batches.append(
                EventBatch(
                    device_id=device, batch_id=ids.new(), events=events[start : start + size]
                )
            )
            start += size
        queues[device] = batches
    sent: list[tuple[str, EventBatch]] = []
    while any(queues.values()):
        device = rng.choice([d for d, q in queues.items() if q])
        batch = queues[device].pop(0)
        chain.deliveries.append((device, batch))
        sent.append((device, batch))
        if rng.random() < 0.1:
            chain.deliveries.append(rng.choice(sent))
    return chain


# ------------------------------------------------------------------ expected figures


@dataclass(frozen=True)
class Entry:
    id: str
    member_id: str
    kind: str
    points: int
    store_id: str
    day: date
    event_id: str
    tier: str | None
    device_id: str


def _day(value: Any) -> date:
    """The UTC day of a stored time (SQLite gives text, PostgreSQL a naive UTC datetime)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.date()


def _moment(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=None)


@dataclass
class Ledger:
    """What the database holds, read as plain rows."""

    entries: list[Entry]
    events: list[
        tuple[int, str, str, str, datetime, dict[str, Any]]
    ]  # seq, id, kind, store, at, data
    members: dict[str, tuple[str, str, datetime, bool, str | None, int]]
    merges: list[tuple[datetime, str]]  # (at, absorbed member)

    @classmethod
    def read(cls, session: Session) -> Ledger:
        conn = session.connection()
        entries = [
            Entry(i, m, k, int(p), s, _day(at), ev, t, d)
            for i, m, k, p, s, at, ev, t, d in conn.execute(
                text(
                    "SELECT id, member_id, kind, points, store_id, at, event_id, tier, device_id "
                    "FROM hq_entry ORDER BY id"
                )
            ).tuples()
        ]
        events = [
            (int(seq), eid, kind, store, _moment(at), json.loads(payload)["data"])
            for seq, eid, kind, store, at, payload in conn.execute(
                text(
                    "SELECT hq_seq, event_id, kind, store_id, at, payload FROM hq_event "
                    "ORDER BY hq_seq"
                )
            ).tuples()
        ]
        members = {
            mid: (store, tier, _moment(created), bool(deleted), merged, int(balance))
            for mid, store, tier, created, deleted, merged, balance in conn.execute(
                text(
                    "SELECT id, store_id, tier, created_at, deleted, merged_into, balance "
                    "FROM hq_member"
                )
            ).tuples()
        }
        merges = [
            (_moment(at), absorbed)
            for at, absorbed in conn.execute(
                text("SELECT at, absorbed_member_id FROM hq_member_merge")
            ).tuples()
        ]
        return cls(entries, events, members, merges)

    def replayed_tiers(self) -> dict[str, str]:
        """Each device entry's tier, from the events in the order HQ stored them: a
        registration sets its member's tier (unless HQ knew them already), a tier change
        changes it, an entry for a member HQ never heard of counts as ``unknown``."""
        tiers: dict[str, str] = {}
        stored_by_event: dict[str, list[Entry]] = defaultdict(list)
        for e in self.entries:
            stored_by_event[e.event_id].append(e)
        out: dict[str, str] = {}
        for _seq, event_id, kind, _store, _at, data in self.events:
            if kind == "member.registered":
                if tiers.get(data["member_id"], "unknown") == "unknown":
                    tiers[data["member_id"]] = data["tier"]
            elif kind == "member.tier_changed" and data["member_id"] in tiers:
                tiers[data["member_id"]] = data["after"]
            for e in stored_by_event.get(event_id, []):
                out[e.id] = tiers.setdefault(e.member_id, "unknown")
            if "entries" in data:
                tiers.setdefault(data["member_id"], "unknown")
        return out


def _in(period: Period, day: date) -> bool:
    return period.start <= day <= period.end


def _key(by: Iterable[str], day: date, store: str, tier: str) -> tuple[Any, ...]:
    wanted = set(by)
    return (
        day if "day" in wanted else None,
        store if "store" in wanted else None,
        tier if "tier" in wanted else None,
    )


def expected_points(
    ledger: Ledger, tier_of: dict[str, str], period: Period, store: str | None, by: tuple[str, ...]
) -> list[PointsRow]:
    sums: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in ledger.entries:
        if not _in(period, e.day) or (store is not None and e.store_id != store):
            continue
        s = sums[_key(by, e.day, e.store_id, tier_of[e.id])]
        s[e.kind] += e.points
        s["entries"] += 1
    if by == ("day",):
        for day in period.each_day():
            sums.setdefault((day, None, None), defaultdict(int))  # every day has a row
    rows = []
    for (day, st, tier), s in sorted(sums.items(), key=lambda kv: [str(v) for v in kv[0]]):
        known = {*EARNED, "redemption", "expiry", "refund", "voucher_return", "adjustment",
                 "opening", "merge_in", "merge_out", "entries"}  # fmt: skip
        rows.append(
            PointsRow(
                day=day, store_id=st, tier=tier,
                issued=sum(s[k] for k in EARNED), purchase=s["purchase"], checkin=s["checkin"],
                birthday=s["birthday"], referral=s["referral"], redeemed=-s["redemption"],
                expired=-s["expiry"], refunded=-s["refund"], returned=s["voucher_return"],
                adjusted=s["adjustment"], opening=s["opening"],
                merged=s["merge_in"] + s["merge_out"],
                other=sum(v for k, v in s.items() if k not in known),
                net=sum(v for k, v in s.items() if k != "entries"), entries=s["entries"],
            )
        )  # fmt: skip
    return rows


def expected_outstanding(ledger: Ledger, period: Period, store: str | None) -> list[OutstandingRow]:
    rows = []
    for day in period.each_day():
        mine = [e for e in ledger.entries if store is None or e.store_id == store]
        net = sum(e.points for e in mine if e.day == day)
        rows.append(OutstandingRow(day, net, sum(e.points for e in mine if e.day <= day)))
    return rows


def expected_gifts(
    ledger: Ledger, period: Period, store: str | None, by: tuple[str, ...]
) -> list[GiftRow]:
    by_event: dict[str, list[Entry]] = defaultdict(list)
    for e in ledger.entries:
        by_event[e.event_id].append(e)
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    names: dict[tuple[Any, ...], str] = defaultdict(str)
    for _seq, event_id, kind, ev_store, at, data in ledger.events:
        day = at.date()
        if kind not in ("gift.redeemed", "gift.voucher_lapsed") or not _in(period, day):
            continue
        if store is not None and ev_store != store:
            continue
        key = (
            day if "day" in by else None,
            ev_store if "store" in by else None,
            data.get("sku", ""),
        )
        s = sums[key]
        if kind == "gift.redeemed":
            s[0] += 1
            s[1] += data.get("qty", 0)
            s[2] -= sum(e.points for e in by_event[event_id] if e.kind == "redemption")
            names[key] = max(names[key], data.get("name") or "")
        else:
            s[3] += 1
            s[4] += sum(e.points for e in by_event[event_id] if e.kind == "voucher_return")
    return [
        GiftRow(day, st, sku, names[(day, st, sku)], *s)
        for (day, st, sku), s in sorted(sums.items(), key=lambda kv: [str(v) for v in kv[0]])
    ]


def expected_members(ledger: Ledger, period: Period, store: str | None) -> list[MemberRow]:
    """Joined: members registered or imported (not known only from entries), on their
    creation day at their home store. Departed: merged away (the merge's day), or erased
    (the first erasure's day, or the registration's if later)."""
    moves: list[tuple[date, str, int, int]] = []
    for _mid, (home, tier, created, _deleted, _merged, _b) in ledger.members.items():
        if tier != "unknown":
            moves.append((created.date(), home, 1, 0))
    merged_away = set()
    for at, absorbed in ledger.merges:
        moves.append((at.date(), ledger.members[absorbed][0], 0, 1))
        merged_away.add(absorbed)
    first_erasure: dict[str, datetime] = {}
    for _seq, _eid, kind, _store, at, data in ledger.events:
        if kind == "member.deleted":
            first_erasure.setdefault(data["member_id"], at)
    for mid, at in first_erasure.items():
        if mid not in ledger.members or mid in merged_away:
            continue
        home, tier, created, deleted, merged, _b = ledger.members[mid]
        if deleted and merged is None and tier != "unknown":
            moves.append((max(created, at).date(), home, 0, 1))
    rows, total = [], 0
    mine = [m for m in moves if store is None or m[1] == store]
    total = sum(j - d for day, _s, j, d in mine if day < period.start)
    for day in period.each_day():
        joined = sum(j for d, _s, j, _ in mine if d == day)
        departed = sum(x for d, _s, _, x in mine if d == day)
        total += joined - departed
        rows.append(MemberRow(day, joined, departed, total))
    return rows


def expected_checkins(
    ledger: Ledger, period: Period, store: str | None, by: tuple[str, ...]
) -> list[CheckinRow]:
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for e in ledger.entries:
        if e.kind != "checkin" or not _in(period, e.day):
            continue
        if store is not None and e.store_id != store:
            continue
        s = sums[(e.day if "day" in by else None, e.store_id if "store" in by else None)]
        s[0] += 1
        s[1] += e.points
    if by == ("day",):
        for day in period.each_day():
            sums.setdefault((day, None), [0, 0])  # every day has a row
    # A store with no check-in in the range has no row of its own.
    return [
        CheckinRow(day, st, n, p)
        for (day, st), (n, p) in sorted(sums.items(), key=lambda kv: [str(v) for v in kv[0]])
    ]


def live_members(ledger: Ledger) -> int:
    """Members registered or imported, neither erased nor merged away."""
    return sum(
        1
        for _store, tier, _c, deleted, merged, _b in ledger.members.values()
        if tier != "unknown" and not deleted and merged is None
    )
