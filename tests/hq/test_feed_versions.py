"""HQ's replication through a real broker: a kiosk of protocol 1.0 beside one that follows
its store's feed, and a member fetched with an MQTT 5 request.

The kiosks here are raw clients with their own certificates, so what travels is exactly
what a kiosk of either version would see.
"""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.protocol import MemberFetch, MemberFetchResult, ReplicaBatch, Topics, decode
from edge.services.gifts import add_gift, redeem_gift
from hq.models import FeedItem, FleetDevice
from hq.service import HqService
from tests.sync.conftest import Runner, wait_until
from tests.sync.helpers import arriving, client, hq_config, outbox_events
from tests.sync.test_ordering import batch, kiosk_with_history, wait_ack

T = Topics()


def feed_items(engine, store_id: str) -> int:
    with Session(engine) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(FeedItem).where(FeedItem.store_id == store_id)
            )
            or 0
        )


def replica_feed(engine, device_id: str) -> str | None:
    with Session(engine) as s:
        return s.scalar(select(FleetDevice.replica_feed).where(FleetDevice.device_id == device_id))


def test_an_old_kiosk_gets_the_chain_and_a_new_one_only_its_store(broker, tmp_path):
    source, reg, events = kiosk_with_history(tmp_path, broker, "K001", "S001", 1)
    hq = HqService(hq_config(broker, tmp_path))
    runner = Runner(hq.run)
    k001 = client(broker, "K001", [(T.ack("K001"), 1)], client_id="K001", store_id="S001")
    old = client(broker, "K009", [(T.replica("K009"), 1)], client_id="K009", store_id="S009")
    new = client(
        broker,
        "K002",
        [(T.replica("K002"), 1), (T.member("K002"), 1)],
        client_id="K002",
        store_id="S002",
    )
    links = (k001, old, new)
    for link in links:
        link.start()
    try:
        wait_until(lambda: all(x.connected for x in links) and hq.link.connected, 20, "links")
        # Protocol 1.0's request, byte for byte: no feed.
        request = {"v": 1, "device_id": "K009", "store_id": "S009", "after_seq": 0}
        assert old.publish(T.replica_request("K009"), json.dumps(request).encode(), qos=1)
        asked = {"v": 1, "device_id": "K002", "store_id": "S002", "after_seq": 0, "feed": "store"}
        assert new.publish(T.replica_request("K002"), json.dumps(asked).encode(), qos=1)
        wait_until(
            lambda: (
                replica_feed(hq.engine, "K009") == "chain"
                and replica_feed(hq.engine, "K002") == "store"
            ),
            20,
            "HQ to hear both requests",
        )
        sent = batch("K001", *events)
        assert k001.publish(T.events("K001"), sent.to_bytes(), qos=1)
        assert len(wait_ack(k001, sent.batch_id).event_ids) == len(events)

        # The 1.0 kiosk gets every event of the chain, as 1.0 wrote it.
        got: list[dict] = []
        for item in arriving(old, 20):
            got.append(json.loads(item.payload))
            if sum(len(b["events"]) for b in got) >= len(events):
                break
        assert {e["event"]["event_id"] for b in got for e in b["events"]} == {
            e.event_id for e in events
        }
        assert all("feed" not in b and all("member" not in e for e in b["events"]) for b in got)
        # The other store's feed has nothing of S001's member, S001's has all of it.
        assert feed_items(hq.engine, "S002") == 0
        assert feed_items(hq.engine, "S001") == len(events)

        # S002 meets the member: an MQTT 5 request, answered on K002's own topic.
        fetch = MemberFetch(device_id="K002", store_id="S002", card_no=reg.card_no)
        answer = new.request(T.member_fetch("K002"), fetch.to_bytes(), T.member("K002"), 10)
        assert answer is not None
        result = decode(MemberFetchResult, answer.payload)
        assert result.found and result.member is not None
        assert sum(e.points for e in result.member.entries) == 123
        assert [c.card_no for c in result.member.cards] == [reg.card_no]
        # ... and the member is in S002's feed from now on (a snapshot item first).
        for item in arriving(new, 20):
            pushed = decode(ReplicaBatch, item.payload)
            if pushed.events and pushed.events[0].member is not None:
                assert pushed.feed == "store" and pushed.to_seq == 1
                break
        else:
            raise AssertionError("the snapshot never reached S002's feed")

        # A request for an answer on another device's topic, or as another store, is refused.
        dropped = hq.counters.dropped
        assert new.request(T.member_fetch("K002"), fetch.to_bytes(), T.member("K009"), 1) is None
        other = MemberFetch(device_id="K002", store_id="S001", card_no=reg.card_no)
        wait_until(lambda: hq.counters.dropped >= dropped + 1, 10, "the first refusal")
        # K002 is known at S002 (its replica request said so): it cannot ask for S001.
        assert new.request(T.member_fetch("K002"), other.to_bytes(), T.member("K002"), 1) is None
        wait_until(lambda: hq.counters.dropped >= dropped + 2, 10, "the second refusal")
    finally:
        for link in links:
            link.close()
        runner.stop()
        source.close()


def test_a_kiosk_from_before_redemptions_gets_snapshots_without_them(broker, tmp_path):
    """A member's snapshot carries their redemptions only to a kiosk that says it reads
    them (a kiosk from before them refuses a field it does not know)."""
    source, reg, _ = kiosk_with_history(tmp_path, broker, "K001", "S001", 1)
    add_gift(source, "MUG", "Mug", points=10, stock=5, per_member_limit=1)
    mug = redeem_gift(source, reg.card_no, "MUG")
    events = outbox_events(source)
    hq = HqService(hq_config(broker, tmp_path))
    runner = Runner(hq.run)
    k001 = client(broker, "K001", [(T.ack("K001"), 1)], client_id="K001", store_id="S001")
    kiosks = {
        device: client(
            broker,
            device,
            [(T.replica(device), 1), (T.member(device), 1)],
            client_id=device,
            store_id=store,
        )
        for device, store in (("K009", "S009"), ("K002", "S002"))
    }
    links = (k001, *kiosks.values())
    for link in links:
        link.start()
    try:
        wait_until(lambda: all(x.connected for x in links) and hq.link.connected, 20, "links")
        sent = batch("K001", *events)
        assert k001.publish(T.events("K001"), sent.to_bytes(), qos=1)
        assert len(wait_ack(k001, sent.batch_id).event_ids) == len(events)
        for device, store, reads in (("K009", "S009", False), ("K002", "S002", True)):
            link = kiosks[device]
            fetch = MemberFetch(
                device_id=device, store_id=store, card_no=reg.card_no, redemptions=reads
            )
            assert ("redemptions" in fetch.to_bytes().decode()) == reads
            answer = link.request(T.member_fetch(device), fetch.to_bytes(), T.member(device), 10)
            assert answer is not None
            assert (b'"redemptions"' in answer.payload) == reads
            member = decode(MemberFetchResult, answer.payload).member
            assert member is not None
            assert [(r.redemption_id, r.sku, r.qty) for r in member.redemptions] == (
                [(mug.redemption_id, "MUG", 1)] if reads else []
            )
            # ... and the snapshot in the store's feed, asked for from the start
            asked = {"v": 1, "device_id": device, "store_id": store, "after_seq": 0}
            asked |= {"feed": "store"} | ({"redemptions": True} if reads else {})
            assert link.publish(T.replica_request(device), json.dumps(asked).encode(), qos=1)
            for item in arriving(link, 20):
                if item.topic != T.replica(device):
                    continue
                pushed = decode(ReplicaBatch, item.payload)
                if pushed.after_seq == 0 and any(e.member is not None for e in pushed.events):
                    assert (b'"redemptions"' in item.payload) == reads
                    break
            else:
                raise AssertionError(f"no snapshot in {store}'s feed")
    finally:
        for link in links:
            link.close()
        runner.stop()
        source.close()
