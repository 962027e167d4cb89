"""Bulk-loads N members, each with an active card, into a data directory for the lookup benchmark.

Run ``python -m bench.load_members DATA_DIR [--members N]``. The schema is the appliance's own
(created by ``AppContext.open``); member 0 is registered through the real use case and serves
as the template whose stored column formats every other row copies. The rest go in straight
through sqlite3 in large transactions:

* member ``i`` has the phone ``13000000000 + i``: its keyed lookup hash and its AES-GCM
  ciphertext are made with the data directory's own keys (every row is encrypted), so lookups
  by phone work exactly as in production;
* rows are inserted in phone-hash order and given ascending member ids and card serials in that
  same order, so each of the four B-trees involved (member id, phone hash, card number, card's
  member) is appended to rather than split at random, which keeps the load to about a minute.
  Card serials run from 1 to N (card ``card_number(s)``).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.app import AppContext
from edge.config import DeviceConfig, KioskConfig
from edge.domain.cards import card_number
from edge.security.personal import PhoneVault, mask_phone
from edge.services.members import register_member

FIRST_PHONE = 13_000_000_000
BATCH = 100_000

MEMBER_COLUMNS = (
    "id, phone_hash, phone_cipher, phone_masked, name_cipher, birthday_cipher, referrer_id, "
    "consent_version, "
    "consented_at, tier, tier_review_at, balance, overdraft_flagged, store_id, created_at, "
    "updated_at, deleted_at"
)
CARD_COLUMNS = (
    "card_no, member_id, state, card_type, issued_at, state_changed_at, replaced_by, device_id"
)


def phone_for(i: int) -> str:
    return str(FIRST_PHONE + i)


def bench_config(members: int) -> KioskConfig:
    """Defaults, with a card range big enough for every loaded card."""
    return KioskConfig(device=DeviceConfig(card_range_end=max(99_999, 2 * members)))


@dataclass(frozen=True)
class LoadReport:
    members: int
    seconds: float
    prepare_seconds: float
    insert_seconds: float
    reused: bool


def count_members(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    with sqlite3.connect(db_path) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM member").fetchone()[0])
        except sqlite3.OperationalError:  # no schema yet
            return 0


def load_members(
    data_dir: Path, members: int, progress: Callable[[str], None] = print
) -> LoadReport:
    """Loads ``members`` members into an empty data directory (reuses one that holds exactly that
    many; refuses one that holds another number)."""
    if members < 1:
        raise ValueError("load at least one member")
    db_path = data_dir / "kiosk.db"
    have = count_members(db_path)
    if have == members:
        return LoadReport(members, 0.0, 0.0, 0.0, True)
    if have:
        raise SystemExit(f"{db_path} holds {have} members, not {members}: use another directory")

    started = time.perf_counter()
    app = AppContext.open(data_dir, config=bench_config(members))
    try:
        template = register_member(app, phone_for(0), consent=True, actor="bench")
        vault = app.vault
        ids = [app.ids.new() for _ in range(members - 1)]
    finally:
        app.close()
    progress(f"hashing {members - 1:,} phone numbers ...")
    order = sorted((vault.lookup_hash(phone_for(i)), i) for i in range(1, members))
    prepared = time.perf_counter()

    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = DELETE")  # no WAL copy of a bulk load; back below
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB
        member_tpl = db.execute(
            f"SELECT {MEMBER_COLUMNS} FROM member WHERE id = ?", (template.member_id,)
        ).fetchone()
        card_tpl = db.execute(
            f"SELECT {CARD_COLUMNS} FROM card WHERE card_no = ?", (template.card_no,)
        ).fetchone()
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            db.execute("BEGIN")
            db.executemany(
                f"INSERT INTO member ({MEMBER_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                _member_rows(chunk, ids, start, vault, member_tpl),
            )
            db.executemany(
                f"INSERT INTO card ({CARD_COLUMNS}) VALUES ({', '.join('?' * 8)})",
                _card_rows(chunk, ids, start, card_tpl),
            )
            db.execute("COMMIT")
            done = start + len(chunk) + 1
            progress(f"  {done:>10,} members  {time.perf_counter() - started:6.1f} s")
        # The device's range continues after the loaded cards, as if it had issued them.
        db.execute("UPDATE card_range SET next_serial = ?", (members + 1,))
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()
    finished = time.perf_counter()
    return LoadReport(members, finished - started, prepared - started, finished - prepared, False)


def _member_rows(
    chunk: list[tuple[str, int]],
    ids: list[str],
    start: int,
    vault: PhoneVault,
    tpl: tuple[object, ...],
) -> Iterator[tuple[object, ...]]:
    consent, consented_at, tier, review_at = tpl[7], tpl[8], tpl[9], tpl[10]
    store, created = tpl[13], tpl[14]
    for k, (digest, i) in enumerate(chunk, start):
        phone = phone_for(i)
        yield (
            ids[k], digest, vault.encrypt(phone), mask_phone(phone), None, None, None,
            consent, consented_at, tier, review_at, 0, 0, store, created, created, None,
        )  # fmt: skip


def _card_rows(
    chunk: list[tuple[str, int]], ids: list[str], start: int, tpl: tuple[object, ...]
) -> Iterator[tuple[object, ...]]:
    state, card_type, issued, changed, device = tpl[2], tpl[3], tpl[4], tpl[5], tpl[7]
    for k in range(start, start + len(chunk)):
        # Serial 1 is member 0's, issued by the real use case.
        yield (card_number(k + 2), ids[k], state, card_type, issued, changed, None, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_members", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    report = load_members(args.data_dir, args.members)
    if report.reused:
        print(f"{args.data_dir} already holds {report.members:,} members")
    else:
        print(
            f"loaded {report.members:,} members in {report.seconds:.1f} s "
            f"(keys, ids, hashes {report.prepare_seconds:.1f} s; "
            f"encrypt and insert {report.insert_seconds:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
