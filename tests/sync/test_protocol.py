"""The protocol module and its document agree; payload rules that need no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.health import HealthState
from edge.config import POINTS_DEFAULTS, PointsConfig, parse_config
from edge.domain.errors import ConfigError
from edge.protocol import (
    CATALOGUE_SIGNING_DOMAIN,
    RULES_SIGNING_DOMAIN,
    TOPIC_TABLE,
    Catalogue,
    CatalogueGift,
    DeviceHealth,
    EventBatch,
    LanePurchase,
    PointsPolicy,
    PointsRules,
    ProtocolError,
    Rules,
    Telemetry,
    Topics,
    TopicSpec,
    decode,
)
from edge.services.pushes import catalogue_signed
from edge.sync.telemetry import parse_throttled
from edge.systemd import watchdog_interval_s
from hq.commands import sign_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _doc_row(spec: TopicSpec) -> str:
    payload = f"`{spec.schema.__name__}`" + (" (expires)" if spec.expires else "")
    retained = "yes" if spec.retain else "no"
    publishers, subscribers = ", ".join(spec.publishers), ", ".join(spec.subscribers)
    return (
        f"| `{spec.pattern}` | {payload} | {spec.qos} | {retained} | {publishers} | {subscribers} |"
    )


def test_the_documents_topic_table_is_the_modules():
    section = DOC.read_text().split("## Topics\n", 1)[1]
    table = section.split("|---|---|---|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    assert table.splitlines() == [_doc_row(spec) for spec in TOPIC_TABLE]


def test_every_topic_is_its_rows_pattern_filled_in():
    t = Topics("p")
    filled = {
        "status": t.status("K1"),
        "telemetry": t.telemetry("K1"),
        "events": t.events("K1"),
        "ack": t.ack("K1"),
        "replica": t.replica("K1"),
        "replica request": t.replica_request("K1"),
        "member request": t.member_fetch("K1"),
        "member": t.member("K1"),
        "voucher request": t.voucher_check("K1"),
        "voucher": t.voucher("K1"),
        "coupon request": t.coupon_ask("K1"),
        "coupon": t.coupon_answer("K1"),
        "command": t.command("K1"),
        "command result": t.command_result("K1"),
        "backup": t.backup("K1"),
        "backup ack": t.backup_ack("K1"),
        "lane purchase": t.lane_purchase("S1", "L1"),
        "lane purchase result": t.lane_purchase_result("S1", "L1"),
        "lane refund": t.lane_refund("S1", "L1"),
        "lane refund result": t.lane_refund_result("S1", "L1"),
        "coupon check": t.lane_coupon("S1", "L1"),
        "coupon result": t.lane_coupon_result("S1", "L1"),
        "lane cards": t.lane_cards("S1"),
        "blocklist": t.blocklist(),
        "catalogue": t.catalogue(),
        "rules": t.rules(),
        "picture": t.picture("ab" * 32, 3),
        "staff": t.staff("S1"),
        "campaigns": t.campaigns(),
    }
    ids = {"device": "K1", "store": "S1", "lane": "L1", "picture": "ab" * 32, "chunk": "3"}
    assert filled == {spec.name: spec.fill("p", **ids) for spec in TOPIC_TABLE}
    assert t.all_lane_purchases("S1") == "p/store/S1/lane/+/purchase"
    assert t.all_lane_refunds("S1") == "p/store/S1/lane/+/refund"
    assert t.every_device("command/result") == "p/device/+/command/result"
    with pytest.raises(ProtocolError):
        t.every_device("nothing")
    with pytest.raises(ProtocolError):
        t.topic(TOPIC_TABLE[0])  # a device topic needs its device


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


def test_device_health_carries_the_words_of_health_state():
    assert set(get_args(DeviceHealth.model_fields["state"].annotation)) == set(HealthState)
    assert HealthState.of("degraded") is HealthState.DEGRADED
    assert HealthState.of("on fire") is HealthState.UNKNOWN


def test_points_rules_and_the_points_section_are_one_model():
    policy = set(PointsPolicy.model_fields)
    assert set(PointsRules.model_fields) == policy | {"v"}
    assert set(PointsConfig.model_fields) == policy | {"member_days"}
    assert set(POINTS_DEFAULTS) == policy
    # The same bounds on both sides: HQ's rules and the file refuse the same value.
    with pytest.raises(ConfigError, match="checkin_points"):
        parse_config("[points]\ncheckin_points = 10001\n")
    rules: dict[str, Any] = {
        "v": 1,
        "version": 1,
        "issued_at": "2026-01-01T00:00:00+00:00",
        "points": {"v": 1, **POINTS_DEFAULTS, "checkin_points": 10_001},
        "offline": {
            "v": 1,
            "offline_after_s": 300,
            "max_points_per_redemption": 0,
            "max_points_per_member": 0,
            "max_points_per_device": 0,
            "max_offline_hours": 24,
        },
    }
    with pytest.raises(ProtocolError, match="checkin_points"):
        decode(Rules, json.dumps(rules).encode())
    # HQ's rules name every field (the defaults are the file's alone) ...
    del rules["points"]["checkin_points"]
    with pytest.raises(ProtocolError, match="checkin_points"):
        decode(Rules, json.dumps(rules).encode())
    # ... and the file may leave any out.
    assert parse_config("[points]\npending_days = 3\n").points.checkin_points == 5


def test_telemetrys_catalogue_version_is_left_out_until_there_is_one():
    """A kiosk without HQ's catalogue sends telemetry as before the field (an HQ of that
    version reads it); one that has one says which, and an old kiosk's reads as 0."""
    sample = Telemetry(
        device_id="K001", store_id="S001", at=datetime.now(UTC), version="1",
        uptime_s=1, outbox_depth=0,
    )  # fmt: skip
    assert "catalogue_version" not in json.loads(sample.to_bytes())
    assert decode(Telemetry, sample.to_bytes()).catalogue_version == 0
    applied = sample.model_copy(update={"catalogue_version": 7})
    assert json.loads(applied.to_bytes())["catalogue_version"] == 7
    assert decode(Telemetry, applied.to_bytes()).catalogue_version == 7


def test_a_catalogue_is_signed_over_every_other_field_in_its_own_domain():
    key = Ed25519PrivateKey.generate()
    catalogue = Catalogue(
        version=2,
        issued_at=datetime.now(UTC),
        gifts=[CatalogueGift(sku="TOWEL", name="毛巾", points_price=300)],
    )
    signed = sign_message(key, CATALOGUE_SIGNING_DOMAIN, catalogue)
    assert catalogue_signed(decode(Catalogue, signed.to_bytes()), key.public_key())
    assert not catalogue_signed(catalogue, key.public_key())  # unsigned
    assert not catalogue_signed(signed, None)  # no key to check it with
    dearer = signed.model_copy(
        update={"gifts": [CatalogueGift(sku="TOWEL", name="毛巾", points_price=1)]}
    )
    assert not catalogue_signed(dearer, key.public_key())
    as_rules = sign_message(key, RULES_SIGNING_DOMAIN, catalogue)  # another domain's
    assert not catalogue_signed(as_rules, key.public_key())
