"""The member-code replay guard in one process: its own database, atomic claims, pruning."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from edge.domain.errors import Refusal
from edge.security.codes import mint_member_code
from edge.services import members
from edge.storage import nonces
from edge.storage.nonces import NONCE_FILE, UsedNonces


def _card(app) -> str:
    return members.register_member(app, "13800138000", consent=True).card_no


def _mint(app, card: str, clock, **ago: float) -> str:
    key = app.keys.member_code_signing_key("")
    return mint_member_code(key, card, clock.now - timedelta(**ago))


def test_a_replayed_code_is_refused_and_a_fresh_one_of_the_same_member_is_not(app, clock):
    card = _card(app)
    code = _mint(app, card, clock)
    assert members.identify(app, code).card_no == card
    for _ in range(2):
        with pytest.raises(Refusal) as err:
            members.identify(app, f" {code}\n")  # the same code, as a scanner may add space
        assert err.value.code == "code_replayed"
    assert members.identify(app, _mint(app, card, clock)).card_no == card


def test_a_used_code_stays_used_after_the_data_directory_is_reopened(make_app, clock):
    app = make_app()
    card = _card(app)
    code = _mint(app, card, clock)
    members.identify(app, code)
    app.close()
    again = make_app()
    with pytest.raises(Refusal) as err:
        members.identify(again, code)
    assert err.value.code == "code_replayed"


def test_the_guard_is_its_own_wal_file_and_identify_by_code_does_not_write_the_ledger(
    make_app, clock
):
    app = make_app()
    card = _card(app)
    app.close()
    # Hold the ledger's write lock: a code lookup must not need it (nor wait 0.3 s for it).
    app = make_app("[database]\nbusy_timeout_ms = 300\n")
    writer = sqlite3.connect(app.data_dir / "kiosk.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        assert members.identify(app, _mint(app, card, clock)).card_no == card
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    path = app.data_dir / NONCE_FILE
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM used_code_nonce").fetchone()[0] == 1


def test_threads_presenting_one_code_at_once_let_exactly_one_through(app, clock):
    card = _card(app)
    code = _mint(app, card, clock)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def scan() -> None:
        start.wait()
        try:
            members.identify(app, code)
            outcomes.append("ok")
        except Refusal as refusal:
            outcomes.append(refusal.code)

    threads = [threading.Thread(target=scan) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["code_replayed"] * 7 + ["ok"]


def test_expired_nonces_are_pruned_at_most_once_an_interval(tmp_path: Path, clock):
    ticks = [1_000.0]
    used = UsedNonces(tmp_path / NONCE_FILE, monotonic=lambda: ticks[0])
    try:
        assert used.claim("aa", clock.now + timedelta(seconds=10), clock.now)
        assert not used.claim("aa", clock.now + timedelta(seconds=10), clock.now)
        clock.advance(seconds=11)
        ticks[0] += nonces.PRUNE_INTERVAL_S - 1
        assert used.claim("bb", clock.now + timedelta(seconds=10), clock.now)
        assert "aa" in used  # expired, but not a prune's turn yet
        ticks[0] += 1
        assert used.claim("cc", clock.now + timedelta(seconds=10), clock.now)
        assert "aa" not in used and "bb" in used and "cc" in used
    finally:
        used.close()


def test_an_expired_code_is_refused_as_expired_even_once_its_nonce_is_pruned(app, clock):
    card = _card(app)
    code = _mint(app, card, clock)
    members.identify(app, code)
    sec = app.config.security
    clock.advance(seconds=sec.member_code_ttl_s + 2 * sec.member_code_skew_s + 1)
    app.used_codes._next_prune = 0.0  # a prune is due
    members.identify(app, _mint(app, card, clock))
    with closing(sqlite3.connect(app.data_dir / NONCE_FILE)) as conn:
        assert conn.execute("SELECT count(*) FROM used_code_nonce").fetchone()[0] == 1
    with pytest.raises(Refusal) as err:
        members.identify(app, code)
    assert err.value.code == "code_expired"
