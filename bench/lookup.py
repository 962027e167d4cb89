"""Member lookup with 1,000,000 members: p50/p99/max of the real lookups, and where the time goes.

Run ``python -m bench.lookup [--members N] [--db DIR] [--samples S]`` (``make bench``). It loads
N members with active cards (``bench.load_members``; ``--db DIR`` keeps the data directory and
reuses it next time), then times, after a warm-up, S random lookups each of:

* the member id by card number, by phone number (``find_member_id``) and by a freshly minted
  signed member code (``claim_member_code``: signature check and replay guard, then the card
  lookup) (budget: p99 under 1 ms for each), the code against the card as a ratio;
* ``identify``, the whole member view the kiosk shows after a scan: of a card number for
  random members (no history yet) and for members with a few purchases, and of a member code,
  again against the card as a ratio;

then the card lookup taken apart layer by layer (SQL alone, the read transaction, SQLAlchemy
Core, the ORM session), what a member code adds, and finally the write cost of the durability
settings (``bench.write_cost``; ``--skip-write-cost`` leaves it out).

Each member code is minted just before it is scanned (minting is not timed) and used once, so
every code lookup records a new nonce in the replay guard (``edge.storage.nonces``).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select

from bench import write_cost
from bench.load_members import bench_config, load_members, phone_for
from edge.app import AppContext
from edge.domain.cards import card_number, parse_card_number
from edge.security.codes import mint_member_code, verify_member_code
from edge.security.personal import normalize_phone
from edge.services.members import claim_member_code, find_member_id, identify, show_member
from edge.services.points import accrue_purchase
from edge.services.tx import transaction
from edge.storage.models import Card
from edge.storage.nonces import UsedNonces

BUDGET_P99_MS = 1.0
HISTORY_MEMBERS = 200
HISTORY_PURCHASES = 6


def timed(fn: Callable[[Any], object], inputs: Iterable[Any], warmup: int) -> list[float]:
    """Milliseconds per call of ``fn`` over ``inputs`` (the first ``warmup`` are not kept).

    ``inputs`` may be a generator: whatever it does to make an input is not timed.
    """
    out: list[float] = []
    clock = time.perf_counter_ns
    for i, arg in enumerate(inputs):
        t0 = clock()
        fn(arg)
        t1 = clock()
        if i >= warmup:
            out.append((t1 - t0) / 1e6)
    return out


_END = object()


def interleaved(
    cases: dict[str, tuple[Callable[[Any], object], Iterable[Any]]], warmup: int
) -> dict[str, list[float]]:
    """:func:`timed` for several cases at once, one call of each in turn.

    Whatever else the machine is doing during the run weighs on every case alike, so their
    ratios hold even when the absolute figures move with the load.
    """
    out: dict[str, list[float]] = {label: [] for label in cases}
    clock = time.perf_counter_ns
    streams = [(out[label], fn, iter(inputs)) for label, (fn, inputs) in cases.items()]
    i = 0
    while True:
        for kept, fn, inputs in streams:
            arg = next(inputs, _END)
            if arg is _END:
                return out
            t0 = clock()
            fn(arg)
            t1 = clock()
            if i >= warmup:
                kept.append((t1 - t0) / 1e6)
        i += 1


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def row(label: str, ms: list[float]) -> str:
    s = sorted(ms)
    return (
        f"  {label:<44} {percentile(s, 0.50):>7.3f} {percentile(s, 0.99):>7.3f} "
        f"{s[-1]:>7.3f} {statistics.fmean(s):>7.3f}"
    )


def ratio(label: str, ms: list[float], base_label: str, base: list[float]) -> str:
    """``ms`` against ``base`` (same run, same machine): p50 and p99 as multiples."""
    s, b = sorted(ms), sorted(base)
    return (
        f"  {label} / {base_label}: p50 x{percentile(s, 0.50) / percentile(b, 0.50):.2f}, "
        f"p99 x{percentile(s, 0.99) / percentile(b, 0.99):.2f}"
    )


def header(title: str) -> str:
    return f"{title}\n  {'':<44} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'mean ms':>7}"


def _must_find(found: object, what: str) -> None:
    if found is None:
        raise SystemExit(f"lookup of {what} found nothing: the loaded data is not what it seems")


def give_history(app: AppContext, serials: list[int]) -> int:
    """A few real purchases for some members, so their view has lots and history to show.

    Returns how many were new (a reused data directory has them already).
    """
    new = 0
    for serial in serials:
        card = card_number(serial)
        for j in range(HISTORY_PURCHASES):
            accrual = accrue_purchase(
                app, card, 2_000 + 1_000 * j, f"BENCH-{serial}-{j}", actor="bench"
            )
            new += not accrual.duplicate
    return new


def layers(app: AppContext, db_path: Path, cards: list[str], warmup: int) -> list[str]:
    """The by-card lookup rebuilt one layer at a time, to show what each layer adds."""
    lines = []
    raw = sqlite3.connect(db_path, isolation_level=None)
    sql = "SELECT member_id FROM card WHERE card_no = ?"
    try:
        lines.append(
            row(
                "SQL alone (sqlite3, open connection)",
                timed(lambda c: raw.execute(sql, (c,)).fetchone(), cards, warmup),
            )
        )

        def with_tx(card: str) -> object:
            raw.execute("BEGIN")
            found = raw.execute(sql, (card,)).fetchone()
            raw.execute("COMMIT")
            return found

        lines.append(row("+ BEGIN/COMMIT around it (sqlite3)", timed(with_tx, cards, warmup)))
    finally:
        raw.close()

    reader = app.db.engine.execution_options(sqlite_begin="DEFERRED")
    prepared = select(Card.member_id).where(Card.card_no == bindparam("card_no"))
    with reader.connect() as conn:

        def long_lived(card: str) -> object:
            with conn.begin():
                return conn.execute(prepared, {"card_no": card}).scalar()

        lines.append(
            row("SQLAlchemy Core, one connection, begin hook", timed(long_lived, cards, warmup))
        )

    def pooled(card: str) -> object:
        with reader.connect() as conn:
            return conn.execute(
                select(Card.member_id).where(Card.card_no == parse_card_number(card))
            ).scalar()

    lines.append(row("+ pool checkout per lookup, statement built", timed(pooled, cards, warmup)))

    def session_only(card: str) -> object:
        with app.db.read() as session:
            return session.scalar(select(Card.member_id).where(Card.card_no == card))

    lines.append(row("ORM session read, statement built", timed(session_only, cards, warmup)))
    lines.append(
        row(
            "find_member_id(card_no=...)",
            timed(lambda c: find_member_id(app, card_no=c), cards, warmup),
        )
    )
    phones = [phone_for(i) for i in range(len(cards))]
    lines.append(
        row(
            "phone: normalise + keyed hash only",
            timed(lambda p: app.vault.lookup_hash(normalize_phone(p)), phones, warmup),
        )
    )
    return lines


def code_layers(app: AppContext, codes: Iterable[str], count: int, warmup: int) -> list[str]:
    """What a member code adds to a card lookup: the signature check and the replay guard."""
    public_key = app.keys.member_code_public_key(app.config.security.member_code_public_key)
    lines = [
        row(
            "verify_member_code (Ed25519, freshness)",
            timed(lambda c: verify_member_code(public_key, c, app.clock()), codes, warmup),
        )
    ]

    guard = app.used_codes
    expiry = timedelta(minutes=4)
    lines.append(
        row(
            "replay guard: claim one nonce (NORMAL)",
            timed(
                lambda _: guard.claim(os.urandom(8).hex(), app.clock() + expiry, app.clock()),
                range(count),
                warmup,
            ),
        )
    )
    # The same claim with an fsync per code (the durability of the ledger, where it used to be).
    fsynced = UsedNonces(app.data_dir / "bench-nonces-full.db")
    try:
        fsynced._connection().execute("PRAGMA synchronous = FULL")
        lines.append(
            row(
                "the same claim with synchronous=FULL",
                timed(
                    lambda _: fsynced.claim(os.urandom(8).hex(), app.clock() + expiry, app.clock()),
                    range(count),
                    warmup,
                ),
            )
        )
    finally:
        fsynced.close()
        for suffix in ("", "-wal", "-shm"):
            (app.data_dir / f"bench-nonces-full.db{suffix}").unlink(missing_ok=True)

    def lookup_audit(_: int) -> None:
        # What the touchscreen adds after every identification, by code, card or phone
        # (edge.services.lookups.record_lookup): one audited write transaction.
        with transaction(app) as tx:
            tx.audit("member", "member.lookup", "BENCH", channel="scan")

    lines.append(
        row(
            "touchscreen: lookup audit record (FULL)",
            timed(lookup_audit, range(count), warmup),
        )
    )
    return lines


def run(args: argparse.Namespace, data_dir: Path) -> None:
    members = args.members
    print(f"loading {members:,} members into {data_dir} ...")
    report = load_members(data_dir, members, progress=lambda line: print(line, flush=True))
    if report.reused:
        print(f"reusing the {members:,} members already in {data_dir}")
    else:
        print(
            f"loaded {members:,} members with cards in {report.seconds:.1f} s "
            f"(ids and phone hashes {report.prepare_seconds:.1f} s, "
            f"AES-GCM encryption of every phone and insert {report.insert_seconds:.1f} s)"
        )

    rng = random.Random(args.seed)
    total = args.warmup + args.samples
    app = AppContext.open(data_dir, config=bench_config(members))
    try:
        # A few consistency checks first: the same member by phone and by card.
        for i in rng.sample(range(members), 50):
            view = show_member(app, phone=phone_for(i))
            _must_find(view.card_no, f"phone {phone_for(i)}")
            assert view.card_no is not None
            if find_member_id(app, card_no=view.card_no) != view.member_id:
                raise SystemExit(f"card and phone of member {i} disagree")

        history_serials = rng.sample(range(1, members + 1), min(HISTORY_MEMBERS, members))
        started = time.perf_counter()
        new_purchases = give_history(app, history_serials)
        history_s = time.perf_counter() - started

        cards = [card_number(rng.randint(1, members)) for _ in range(total)]
        code_cards = [card_number(rng.randint(1, members)) for _ in range(total)]
        phones = [phone_for(rng.randrange(members)) for _ in range(total)]
        history_cards = [card_number(rng.choice(history_serials)) for _ in range(total)]

        def by_card(card: str) -> None:
            _must_find(find_member_id(app, card_no=card), card)

        def by_phone(phone: str) -> None:
            _must_find(find_member_id(app, phone=phone), phone)

        def by_code(code: str) -> None:
            _must_find(find_member_id(app, card_no=claim_member_code(app, code)), code)

        signing_key = app.keys.member_code_signing_key(app.config.security.member_code_signing_key)

        def fresh_codes(of: list[str] = code_cards) -> Iterator[str]:
            """Each code minted just before its scan, as a phone shows it (minting not timed)."""
            for card in of:
                yield mint_member_code(signing_key, card, app.clock())

        def scan(scanned: str) -> None:
            identify(app, scanned)

        gc.collect()
        # Card, phone and code lookups take turns, and so do the two views: each code is
        # compared with the card lookups made at the same moments of the run.
        results = interleaved(
            {
                "find_member_id by card": (by_card, cards),
                "find_member_id by phone": (by_phone, phones),
                "member id by member code (claim + card)": (by_code, fresh_codes()),
            },
            args.warmup,
        )
        results |= interleaved(
            {
                "identify(card), random member": (scan, cards),
                "identify(member code), random member": (scan, fresh_codes()),
            },
            args.warmup,
        )
        results[f"identify(card), member with {HISTORY_PURCHASES} purchases"] = timed(
            scan, history_cards, args.warmup
        )
        print()
        print(
            header(
                f"member lookup, {members:,} members "
                f"({args.samples:,} samples each after {args.warmup:,} warm-up)"
            )
        )
        for label, ms in results.items():
            print(row(label, ms))
        print(
            f"  ({HISTORY_MEMBERS} members have {HISTORY_PURCHASES} purchases each, made through "
            f"accrue_purchase: {new_purchases} new ones in {history_s:.1f} s)"
        )
        for label in (
            "find_member_id by card",
            "find_member_id by phone",
            "member id by member code (claim + card)",
        ):
            p99 = percentile(sorted(results[label]), 0.99)
            verdict = "met" if p99 < BUDGET_P99_MS else "MISSED"
            print(f"  budget p99 < {BUDGET_P99_MS:g} ms, {label}: {verdict} ({p99:.3f} ms)")
        card_label, card_view = "find_member_id by card", "identify(card), random member"
        for label, base in (
            ("member id by member code (claim + card)", card_label),
            ("identify(member code), random member", card_view),
        ):
            print(ratio(label, results[label], base, results[base]))

        print()
        print(header("where the time of a card lookup goes (layer by layer, same random cards)"))
        for line in layers(app, data_dir / "kiosk.db", cards, args.warmup):
            print(line)
        print()
        print(header("what a member code adds (identify(code) - identify(card))"))
        for line in code_layers(app, fresh_codes(cards), total, args.warmup):
            print(line)
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lookup", description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--db", type=Path, default=None, help="data directory to load into and reuse (kept)"
    )
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-write-cost", action="store_true")
    args = parser.parse_args(argv)
    if args.db is not None:
        run(args, args.db)
        if not args.skip_write_cost:
            write_cost.main([])
        return 0
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-lookup-") as tmp:
        run(args, Path(tmp) / "data")
        if not args.skip_write_cost:
            write_cost.run(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
