"""The audit log's hash chain: canonical records, and the first broken link found."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.security.chain import GENESIS, canonical_json, chain_hash, verify_chain

Row = tuple[dict[str, Any], str, str]
RECORDS = st.lists(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.text(max_size=12), st.booleans(), st.none()),
        max_size=4,
    ),
    min_size=1,
    max_size=12,
)


def _chain(records: list[dict[str, Any]]) -> list[Row]:
    rows, prev = [], GENESIS
    for record in records:
        digest = chain_hash(prev, record)
        rows.append((record, prev, digest))
        prev = digest
    return rows


def _audit(n: int) -> list[dict[str, Any]]:
    return [
        {"seq": i, "action": "adjust_points", "staff": "王芳", "delta": i * 10} for i in range(n)
    ]


def test_canonical_json_is_one_spelling() -> None:
    at = datetime(2025, 3, 8, 9, 30, tzinfo=UTC)
    record = {"b": 1, "a": {"z": [1, 2], "y": "王芳"}, "at": at, "day": date(2025, 3, 8)}
    text = canonical_json(record)
    assert text == (
        '{"a":{"y":"王芳","z":[1,2]},"at":"2025-03-08T09:30:00+00:00","b":1,"day":"2025-03-08"}'
    )
    assert canonical_json(dict(reversed(list(record.items())))) == text


def test_canonical_json_refuses_what_json_cannot_spell() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_chain_hash_is_sha256_of_prev_newline_record() -> None:
    record = {"action": "login", "staff": "S1"}
    expected = hashlib.sha256(
        (GENESIS + "\n" + json.dumps(record, sort_keys=True, separators=(",", ":"))).encode()
    ).hexdigest()
    assert chain_hash(GENESIS, record) == expected
    assert chain_hash("1" * 64, record) != expected
    assert GENESIS == "0" * 64


def test_an_intact_chain_and_an_empty_one_verify() -> None:
    assert verify_chain(_chain(_audit(20))) is None
    assert verify_chain([]) is None
    assert verify_chain(iter(_chain(_audit(3)))) is None


@given(RECORDS, st.data())
def test_an_edited_record_is_found(records: list[dict[str, Any]], data: st.DataObject) -> None:
    rows = _chain(records)
    index = data.draw(st.integers(0, len(rows) - 1))
    record, prev, digest = rows[index]
    rows[index] = ({**record, "edited-by-test": True}, prev, digest)
    assert verify_chain(rows) == index


@pytest.mark.parametrize("index", [0, 5, 9])
def test_a_rewritten_hash_is_found(index: int) -> None:
    rows = _chain(_audit(10))
    record, prev, _ = rows[index]
    rows[index] = (record, prev, "f" * 64)
    assert verify_chain(rows) == index


@pytest.mark.parametrize("index", [0, 4, 8])
def test_a_deleted_row_breaks_the_next_link(index: int) -> None:
    rows = _chain(_audit(10))
    del rows[index]
    assert verify_chain(rows) == index


def test_swapped_rows_are_found() -> None:
    rows = _chain(_audit(10))
    rows[3], rows[4] = rows[4], rows[3]
    assert verify_chain(rows) == 3


def test_a_log_cut_at_the_front_is_found() -> None:
    rows = _chain(_audit(10))
    assert verify_chain(rows[3:]) == 0


def test_a_rehashed_forgery_still_breaks_the_following_link() -> None:
    rows = _chain(_audit(10))
    forged = {**rows[4][0], "delta": 99_999}
    rows[4] = (forged, rows[4][1], chain_hash(rows[4][1], forged))
    assert verify_chain(rows) == 5
