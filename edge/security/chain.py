"""Hash chain over the audit log: editing, deleting or reordering an entry breaks a link."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from typing import Any

GENESIS = "0" * 64


def canonical_json(record: Mapping[str, Any]) -> str:
    """One spelling per record: sorted keys, no spaces, UTF-8 kept, times as ISO strings.

    The hash must not depend on dict order or on how a JSON library formats things, or a
    record read back from storage would no longer match the hash taken when it was written.
    Datetimes are written with ``isoformat()`` as given; the appliance passes UTC everywhere.

    Raises:
        TypeError: a value is not JSON (other than date, time and datetime).
        ValueError: a float is NaN or infinite, which JSON cannot spell.
    """
    return json.dumps(
        record,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_iso,
    )


def chain_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the previous link's hash, a newline, and the canonical record."""
    text = prev_hash + "\n" + canonical_json(record)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_chain(records: Iterable[tuple[Mapping[str, Any], str, str]]) -> int | None:
    """Walk ``(record, prev_hash, hash)`` rows in order; the index of the first bad link or None.

    A link is bad when its stored hash is not the hash of its record, when its ``prev_hash``
    is not the previous row's hash (a row removed or moved), or, for the first row, when its
    ``prev_hash`` is not :data:`GENESIS` (the log was cut at the front).
    """
    expected_prev = GENESIS
    for index, (record, prev_hash, stored_hash) in enumerate(records):
        if prev_hash != expected_prev or chain_hash(prev_hash, record) != stored_hash:
            return index
        expected_prev = stored_hash
    return None


def _iso(value: object) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
