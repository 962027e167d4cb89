"""The broker renderer: input that would leave a broken or half-written broker is refused,
and the ACL it renders from the protocol's table lets every client use exactly its topics
(checked line by line with a small ACL matcher, and against a running Mosquitto)."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.app import AppContext
from edge.config import parse_config
from edge.protocol import DEVICES, TOPIC_TABLE, Topics, TopicSpec
from edge.protocol.messages import (
    COUPON_RESULT_TOPIC,
    LANE_REFUND_RESULT_TOPIC,
    LANE_RESULT_TOPIC,
    PICTURE_TOPIC,
)
from edge.sync.agent import link_settings
from edge.sync.broker import DevCA, Identity, render_acl, render_bridge_conf, render_broker
from hq.lanes import Lane
from hq.service import HqConfig, HqService, make_hq_engine
from tests.hq.database import sqlite_hq_url
from tests.sync.conftest import HQ_IDENTITIES, Broker, free_port, kiosk_config
from tests.sync.helpers import client, received

STORE = [
    Identity("K001", "kiosk", "S001"),
    Identity("S001-L1", "lane", "S001"),
    Identity("bridge-S001", "bridge", "S001"),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_directory_with_the_chains_ca_crt_alone_is_refused_and_kept(tmp_path):
    chain = tmp_path / "chain"
    DevCA(chain)
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.crt").write_bytes((chain / "ca.crt").read_bytes())
    before = _sha(store / "ca.crt")

    with pytest.raises(ValueError, match=r"ca\.crt and ca\.key go together"):
        render_broker(store, 18883, STORE, hq_address="127.0.0.1:28883")

    assert _sha(store / "ca.crt") == before  # the chain's CA certificate is untouched
    assert sorted(p.name for p in store.iterdir()) == ["ca.crt"]  # and nothing was added


def test_a_key_without_its_certificate_is_refused_too(tmp_path):
    DevCA(tmp_path / "chain")
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.key").write_bytes((tmp_path / "chain" / "ca.key").read_bytes())
    with pytest.raises(ValueError, match="go together"):
        DevCA(store)
    assert sorted(p.name for p in store.iterdir()) == ["ca.key"]


def test_both_halves_of_the_chains_ca_are_reused(tmp_path):
    chain = tmp_path / "chain"
    DevCA(chain)
    store = tmp_path / "store"
    store.mkdir()
    for name in ("ca.crt", "ca.key"):
        (store / name).write_bytes((chain / name).read_bytes())
    render_broker(store, 18883, STORE, hq_address="127.0.0.1:28883")
    assert _sha(store / "ca.crt") == _sha(chain / "ca.crt")
    assert (store / "conf.d" / "bridge-S001.conf").exists()


@pytest.mark.parametrize("address", ["nohost", ":8883", "hq:", "hq:port", "hq:0", "hq:65536"])
def test_a_bad_hq_address_writes_nothing(tmp_path, address):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="host:port"):
        render_broker(out, 18883, STORE, hq_address=address)
    assert not out.exists()


def test_a_store_broker_without_devices_writes_nothing(tmp_path):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="no kiosk or lane"):
        render_broker(out, 18883, [STORE[2]], hq_address="127.0.0.1:28883")
    assert not out.exists()


# --------------------------------------------------------------------------- the ACL


def covers(acl_filter: str, topic: str) -> bool:
    """Whether an ACL filter lets through ``topic``: a topic name, or a subscription whose
    every possible topic it matches (``+`` in the subscription needs ``+`` or ``#`` there)."""
    want, have = acl_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or have[i] == "#" or (have[i] == "+" and level != "+"):
            return False
        if level not in ("+", have[i]):
            return False
    return len(want) == len(have)


@dataclass
class Acl:
    """A Mosquitto ``acl_file`` as the broker reads it: ``pattern`` lines for every client
    (``%u`` = its username, the certificate's CN), ``topic`` lines for the ``user`` above."""

    patterns: list[tuple[str, str]] = field(default_factory=list)
    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Acl:
        acl, user = cls(), None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            if word == "user":
                user = rest
                acl.users.setdefault(user, [])
                continue
            access, _, topic = rest.partition(" ")
            if not topic:  # "topic foo" is read and write
                access, topic = "readwrite", access
            assert access in ("read", "write", "readwrite"), line
            if word == "pattern":
                acl.patterns.append((access, topic))
            else:
                assert word == "topic" and user is not None, f"unexpected line: {line}"
                acl.users[user].append((access, topic))
        return acl

    def allows(self, user: str, access: str, topic: str) -> bool:
        if topic.startswith("$share/"):  # a shared subscription is checked on its filter
            topic = topic.split("/", 2)[2]
        grants = [(a, t.replace("%u", user)) for a, t in self.patterns]
        grants += self.users.get(user, [])
        return any(a in (access, "readwrite") and covers(t, topic) for a, t in grants)


CHAIN = [*HQ_IDENTITIES, Identity("bridge-S002", "bridge", "S002")]  # HQ's broker's inventory
BY_CN = {i.cn: i for i in CHAIN}
# Ids of the chain, and ones of no identity (a device, a store and a lane HQ has never heard of).
IDS = {
    "device": [*(i.cn for i in CHAIN), "K009"],
    "store": ["S001", "S002", "S009"],
    "lane": ["L1", "L2", "L9"],
    "picture": ["3" * 64],
    "chunk": ["0", "7"],
}
T = Topics()


@dataclass(frozen=True)
class Probe:
    """One concrete topic: of a row of the table with its ids, or the bridges' own state."""

    topic: str
    spec: TopicSpec | None
    ids: tuple[tuple[str, str], ...] = ()


def probes() -> Iterator[Probe]:
    for spec in TOPIC_TABLE:
        names = sorted(spec.ids)
        for values in itertools.product(*(IDS[n] for n in names)):
            ids = dict(zip(names, values, strict=True))
            yield Probe(T.topic(spec, **ids), spec, tuple(ids.items()))
    for store in IDS["store"]:
        yield Probe(f"mck/v1/bridge/{store}/state", None, (("store", store),))


PROBES = list(probes())


def table_allows(ident: Identity, access: str, probe: Probe) -> bool:
    """What the protocol's table says, read directly from its rows (docs/protocol.md,
    docs/broker.md): the expectation the rendered ACL is held to."""
    ids = dict(probe.ids)
    if ident.role == "hq":
        return True  # HQ, the system of record, reads and writes everything
    if probe.spec is None:  # a bridge's connection state: its own store's, written by it
        return ident.role == "bridge" and access == "write" and ids["store"] == ident.store_id
    spec = probe.spec
    parties = spec.publishers if access == "write" else spec.subscribers
    if ident.role == "bridge":
        store_devices = {i.cn for i in CHAIN if i.store_id == ident.store_id and i.role in DEVICES}
        if spec.tree == "device" and ids["device"] in store_devices:
            return True  # it speaks for its store's kiosks and lanes, both ways
        if spec.tree == "hq" and access == "read" and set(DEVICES) & set(parties):
            # and brings in the pushes they read: the chain's, and its own store's
            return ids.get("store", ident.store_id) == ident.store_id
    elif ident.role in parties:
        own = {"device": ident.cn, "store": ident.store_id}
        if ident.role == "lane":
            own["lane"] = ident.cn
        if all(ids[name] == own[name] for name in ids if name in own):
            return True
    # What every device may do on its own device topics, any client may on its own id.
    return spec.tree == "device" and set(DEVICES) <= set(parties) and ids["device"] == ident.cn


def rendered(identities: list[Identity] = CHAIN) -> Acl:
    return Acl.parse(render_acl(identities))


def test_covers_matches_topics_and_subscriptions_like_mqtt():
    assert covers("a/+/c", "a/b/c") and covers("a/#", "a/b/c") and covers("a/#", "a")
    assert not covers("a/+/c", "a/b/d") and not covers("a/b", "a/b/c")
    assert covers("a/+/c", "a/+/c") and not covers("a/b/c", "a/+/c")
    assert covers("a/#", "a/+/#") and not covers("a/+", "a/#")


@pytest.mark.parametrize("cn", sorted(BY_CN))
def test_the_rendered_acl_allows_exactly_what_the_table_says(cn):
    acl, ident = rendered(), BY_CN[cn]
    wrong = [
        (access, p.topic)
        for p in PROBES
        for access in ("write", "read")
        if acl.allows(cn, access, p.topic) != table_allows(ident, access, p)
    ]
    assert not wrong, wrong


def test_a_device_cannot_speak_or_hear_for_another():
    acl = rendered()
    assert acl.allows("K001", "write", T.events("K001"))
    assert not acl.allows("K001", "write", T.events("K002"))  # another device's events
    assert not acl.allows("K001", "write", T.ack("K001"))  # an ack only HQ gives
    assert not acl.allows("K001", "read", T.replica("K002"))  # another's replica
    assert not acl.allows("K001", "read", T.command("K002"))
    assert not acl.allows("K001", "read", T.lane_purchase("S002", "L2"))  # another store's
    assert not acl.allows("L1", "write", T.lane_purchase("S001", "L2"))  # another lane's
    assert not acl.allows("L1", "read", T.lane_purchase_result("S001", "L2"))
    assert not acl.allows("L1", "write", T.lane_cards("S001"))
    assert not acl.allows("K001", "write", T.catalogue())
    assert not acl.allows("bridge-S001", "write", T.events("K002"))  # another store's kiosk
    assert not acl.allows("bridge-S001", "read", T.command("L2"))
    assert not acl.allows("K099", "read", T.blocklist())  # a certificate of no inventory
    assert acl.allows("K001", "read", T.staff("S001"))  # its own store's staff list
    assert not acl.allows("K001", "read", T.staff("S002"))  # and no other store's
    assert not acl.allows("L1", "read", T.staff("S001"))  # lanes have no staff sign-in
    assert not acl.allows("bridge-S001", "read", T.staff("S002"))
    assert not acl.allows("K001", "write", T.staff("S001"))  # HQ alone publishes it


# What each client publishes, as its code does it; subscriptions are read from its settings.
KIOSK_PUBLISHES = [  # edge/sync/agent.py, outbox.py, backup_transfer.py, member_fetch.py
    T.status("K001"),
    T.telemetry("K001"),
    T.events("K001"),
    T.replica_request("K001"),
    T.member_fetch("K001"),
    T.voucher_check("K001"),
    T.coupon_ask("K001"),
    T.command_result("K001"),
    T.backup("K001"),
    LANE_RESULT_TOPIC.fill("mck/v1", store="S001"),  # to whichever lane of the store asks
    LANE_REFUND_RESULT_TOPIC.fill("mck/v1", store="S001"),
    COUPON_RESULT_TOPIC.fill("mck/v1", store="S001"),
    T.lane_cards("S001"),
]
LANE_PUBLISHES = [  # hq/lanes.py
    T.lane_purchase("S001", "L1"),
    T.lane_refund("S001", "L1"),
    T.lane_coupon("S001", "L1"),
]
HQ_PUBLISHES = [  # hq/service.py, hq/commands.py
    T.status("hq"),
    T.ack("K001"),
    T.replica("K001"),
    T.member("K001"),
    T.voucher("K001"),
    T.coupon_answer("K001"),
    T.backup_ack("K001"),
    T.command("K001"),
    T.blocklist(),
    T.catalogue(),
    T.rules(),
    T.staff("S001"),
    T.campaigns(),
]


def kiosk_uses(tmp_path: Path) -> tuple[list[str], list[str]]:
    config = parse_config(kiosk_config("K001", "S001", 8883, 1))
    app = AppContext.open(tmp_path / "K001", config=config)
    try:
        settings = link_settings(app, T)
    finally:
        app.close()
    # and, while it fetches one, the chunks of a picture its catalogue names (edge.sync.pictures)
    fetched = PICTURE_TOPIC.fill(T.prefix)
    return [settings.status_topic, *KIOSK_PUBLISHES], [
        *(t for t, _ in settings.subscriptions),
        fetched,
    ]


def lane_uses() -> tuple[list[str], list[str]]:
    lane = Lane("S001", "L1", "127.0.0.1", 8883, None)
    settings = lane.link.settings
    return [settings.status_topic, *LANE_PUBLISHES], [t for t, _ in settings.subscriptions]


def hq_uses(tmp_path: Path) -> tuple[list[str], list[str]]:
    url = sqlite_hq_url(tmp_path / "hq.db")
    service = HqService(HqConfig(database_url=url), make_hq_engine(url))
    settings = service.link.settings
    requests = service.fetch_link.settings  # members and vouchers asked while people wait
    service.engine.dispose()
    return [settings.status_topic, *HQ_PUBLISHES], [
        t for t, _ in (*settings.subscriptions, *requests.subscriptions)
    ]


def bridge_uses() -> tuple[list[str], list[str]]:
    """At HQ's broker: what the store's bridge forwards out, what it subscribes to for in."""
    conf = render_bridge_conf("S001", "hq.example:8883", Path("/tls"), ["K001", "L1"])
    publishes, subscribes = ["mck/v1/bridge/S001/state"], list[str]()
    for line in conf.splitlines():
        if line.startswith("topic "):
            _, pattern, direction, _, remote, _ = line.split(" ")
            (publishes if direction == "out" else subscribes).append(remote + pattern)
    return publishes, subscribes


def test_every_topic_a_client_uses_is_allowed_and_nothing_but_what_all_devices_share(tmp_path):
    acl = rendered()
    uses = {
        "K001": kiosk_uses(tmp_path),
        "L1": lane_uses(),
        "hq": hq_uses(tmp_path),
        "bridge-S001": bridge_uses(),
    }
    for cn, (publishes, subscribes) in uses.items():
        assert publishes and subscribes, cn
        assert [t for t in publishes if not acl.allows(cn, "write", t)] == [], cn
        assert [t for t in subscribes if not acl.allows(cn, "read", t)] == [], cn

    # A kiosk may use its topics and nothing else: every probe it may write is one it
    # publishes on, every probe it may read one of its subscriptions takes in.
    publishes, subscribes = uses["K001"]
    for p in PROBES:
        used_write = any(covers(t, p.topic) for t in publishes)
        used_read = any(covers(t, p.topic) for t in subscribes)
        assert acl.allows("K001", "write", p.topic) == used_write, p.topic
        assert acl.allows("K001", "read", p.topic) == used_read, p.topic

    # A lane may use its topics and, beyond them, only what the table lets every device use
    # (the device topics on its own id, HQ's pushes), which the lane leaves alone.
    publishes, subscribes = uses["L1"]
    for p in PROBES:
        for access, used in (("write", publishes), ("read", subscribes)):
            spec = p.spec
            shared = (
                spec is not None
                and set(DEVICES) <= set(spec.publishers if access == "write" else spec.subscribers)
                and (spec.tree == "hq" or ("device", "L1") in p.ids)
            )
            in_use = any(covers(t, p.topic) for t in used)
            assert acl.allows("L1", access, p.topic) == (in_use or shared), (access, p.topic)


# --------------------------------------------------------------------------- a running broker


@pytest.fixture(scope="module")
def chain_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Mosquitto on the ACL rendered for the whole chain (HQ's broker, bridges included)."""
    directory = tmp_path_factory.mktemp("acl") / "broker"
    port = free_port()
    broker = Broker(directory.resolve(), port, render_broker(directory, port, CHAIN))
    broker.start()
    yield broker
    broker.stop()


def _collect(link, probe: bytes, end: bytes, timeout: float = 15.0) -> set[str]:
    """The topics of the ``probe`` messages ``link`` receives before the ``end`` one."""
    topics: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in received(link, 0.2):
            if message.payload == end:
                return topics | {m.topic for m in received(link, 0.3) if m.payload == probe}
            if message.payload == probe:
                topics.add(message.topic)
    raise AssertionError(f"no end marker within {timeout} s")


@pytest.mark.parametrize("cn", ["K001", "L1", "bridge-S001"])
def test_mosquitto_lets_through_what_the_matcher_says(chain_broker, cn):
    acl = rendered()
    probe, end = f"probe {cn}".encode(), f"end {cn}".encode()

    # What it may publish: HQ, which reads everything, sees exactly those arrive.
    observer = client(chain_broker, "hq", [("mck/v1/#", 1)], client_id=f"hq-sees-{cn}")
    speaker = client(chain_broker, cn, client_id=f"{cn}-speaks")
    observer.start()
    speaker.start()
    try:
        assert observer.wait_connected(10) and speaker.wait_connected(10)
        time.sleep(0.3)
        received(observer, 0.2)
        for p in PROBES:
            assert speaker.publish(p.topic, probe, qos=1)
        speaker.publish(T.status(cn), end, qos=1)  # its own, which every client may write
        arrived = _collect(observer, probe, end)
    finally:
        speaker.close()
        observer.close()
    assert arrived == {p.topic for p in PROBES if acl.allows(cn, "write", p.topic)}

    # What it may read: of HQ's message on every probe, exactly those reach it, and not one
    # more through a shared subscription (the way HQ's workers subscribe).
    readable = [p.topic for p in PROBES if acl.allows(cn, "read", p.topic)]
    plain = [(p.topic, 1) for p in PROBES]
    assert _heard(chain_broker, cn, plain, readable, "listens") == set(readable)
    shared = [(T.shared(f"probe-{cn}", p.topic), 1) for p in PROBES]
    assert _heard(chain_broker, cn, shared, readable, "shares") == set(readable)


def _heard(chain_broker, cn: str, subscriptions, readable: list[str], how: str) -> set[str]:
    """The probe topics ``cn`` hears on ``subscriptions`` when HQ speaks on every probe."""
    probe, end = f"probe {cn} {how}".encode(), f"end {cn} {how}".encode()
    listener = client(chain_broker, cn, subscriptions, client_id=f"{cn}-{how}")
    sender = client(chain_broker, "hq", client_id=f"hq-tells-{cn}-{how}")
    listener.start()
    sender.start()
    try:
        assert listener.wait_connected(10) and sender.wait_connected(10)  # and subscribed
        received(listener, 0.2)
        for p in PROBES:
            assert sender.publish(p.topic, probe, qos=1)
        sender.publish(readable[0], end, qos=1)
        return _collect(listener, probe, end)
    finally:
        sender.close()
        listener.close()
