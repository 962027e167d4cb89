"""The protocol module and its document agree; payload rules that need no broker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.protocol import TOPIC_TABLE, EventBatch, LanePurchase, ProtocolError, Topics, decode
from edge.sync.telemetry import parse_throttled
from edge.systemd import watchdog_interval_s

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_topic_of_the_module_is_documented():
    text = DOC.read_text()
    for spec in TOPIC_TABLE:
        assert f"`{spec.pattern}`" in text, spec.pattern
        assert spec.schema.__name__ in text


def test_topics_refuse_wildcards_and_separators_in_ids():
    t = Topics()
    assert t.ack("K001") == "mck/v1/device/K001/ack"
    for bad in ("K0/01", "+", "#", "", "K 1"):
        with pytest.raises(ProtocolError):
            t.ack(bad)
    assert t.parse_lane_topic("mck/v1/store/S1/lane/L1/purchase") == ("S1", "L1", "purchase")
    assert t.parse_device_topic("mck/v1/device/K1/replica/request") == ("K1", "replica/request")


def test_decode_refuses_extra_fields_wrong_versions_and_non_json():
    good = LanePurchase(
        receipt_id="R1", lane_id="L1", card_no="1000000001", amount_cents=5, at=datetime.now(UTC)
    )
    assert decode(LanePurchase, good.to_bytes()) == good
    for payload in (
        good.to_bytes().replace(b'"v":1', b'"v":2'),
        good.to_bytes()[:-1] + b',"x":1}',
        b"\xff\xfe",
        b"[]",
        good.to_bytes().replace(b'"amount_cents":5', b'"amount_cents":-5'),
    ):
        with pytest.raises(ProtocolError):
            decode(LanePurchase, payload)
    with pytest.raises(ProtocolError):
        decode(EventBatch, b'{"v":1,"device_id":"K1","batch_id":"x","events":[]}')


def test_throttling_bits_and_watchdog_interval():
    t = parse_throttled("throttled=0x50005")
    assert t is not None and t.undervoltage_now and t.throttled_now and not t.freq_capped_now
    assert t.undervoltage_occurred and t.throttled_occurred and not t.soft_temp_limit_occurred
    assert parse_throttled("error") is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval_s({}) is None
