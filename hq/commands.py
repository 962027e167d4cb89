"""HQ's pushes: signed commands to one device, signed rules, the catalogue and blocklist."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import tarfile
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.protocol import (
    CAMPAIGNS_SIGNING_DOMAIN,
    CATALOGUE_SIGNING_DOMAIN,
    COMMAND_SIGNING_DOMAIN,
    RULES_SIGNING_DOMAIN,
    STAFF_SIGNING_DOMAIN,
    Campaigns,
    Catalogue,
    Command,
    CommandResult,
    Message,
    ProtocolError,
    Rules,
    Signed,
    StaffList,
    Topics,
    decode,
    picture_chunks,
)
from edge.protocol.link import Inbound, MqttLink
from edge.security.signing import sign_bytes
from hq.service import HqConfig, hq_link, publish_command


def load_command_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def sign_command(
    key: Ed25519PrivateKey,
    device_id: str,
    command: str,
    args: dict[str, str | int | bool] | None = None,
    ttl: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    transaction: str | None = None,
) -> Command:
    """A command for ``device_id``, valid for ``ttl``, signed over every field."""
    at = now or datetime.now(UTC)
    unsigned = Command(
        transaction=transaction or secrets.token_hex(8),
        device_id=device_id,
        command=command,
        args=args or {},
        issued_at=at,
        expires_at=at + ttl,
    )
    return sign_message(key, COMMAND_SIGNING_DOMAIN, unsigned)


S = TypeVar("S", bound=Signed)


def sign_message(key: Ed25519PrivateKey, domain: bytes, message: S) -> S:
    """``message`` with HQ's signature over every other field."""
    signature = sign_bytes(key, domain, message.signed_bytes())
    return message.model_copy(update={"signature": base64.b64encode(signature).decode()})


@dataclass(frozen=True)
class BundleFacts:
    """What an ``update`` command tells the device about the bundle it is to fetch."""

    version: str
    sha256: str
    size: int


def bundle_facts(bundle: Path) -> BundleFacts:
    """The version in ``bundle``'s manifest, and the file's SHA-256 and size.

    The device checks the manifest's signature itself; this only reads what to announce.

    Raises:
        ValueError: ``bundle`` is not an update bundle (a tar with a manifest.json).
    """
    try:
        with tarfile.open(bundle, "r:*") as tar:
            member = tar.getmember("manifest.json")
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None or member.size > 256 * 1024:
                raise ValueError("its manifest.json is not a small file")
            version = json.loads(handle.read())["version"]
    except (OSError, tarfile.TarError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{bundle} is not an update bundle: {exc}") from None
    if not isinstance(version, str) or not version:
        raise ValueError(f"{bundle}: the manifest names no version")
    digest = hashlib.sha256()
    with bundle.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return BundleFacts(version, digest.hexdigest(), bundle.stat().st_size)


def update_command(
    key: Ed25519PrivateKey,
    device_id: str,
    bundle: Path,
    url: str,
    ttl: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    transaction: str | None = None,
    allow_downgrade_from: str | None = None,
) -> Command:
    """A signed ``update`` command: fetch ``bundle`` from ``url`` (http or https), check it
    is exactly this file and signed with HQ's update key, and queue it for the installer.
    ``transaction`` resends an earlier one (the device answers it from its record).
    ``allow_downgrade_from`` (the version the device runs) lets an older bundle install: the
    command carries HQ's signed allowance of exactly that step (``rollback_allowance``, an
    ``allow_rollback`` command the installer checks, valid a day longer than the command).

    Raises:
        ValueError: ``url`` is not http(s), or ``bundle`` is not an update bundle.
    """
    _check_bundle_url(url)
    return update_offer(
        key,
        device_id,
        bundle_facts(bundle),
        url,
        ttl,
        now,
        transaction,
        allow_downgrade_from,
    )


def _check_bundle_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the device fetches bundles over http(s) only, not {url!r}")


def update_offer(
    key: Ed25519PrivateKey,
    device_id: str,
    facts: BundleFacts,
    url: str,
    ttl: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    transaction: str | None = None,
    allow_downgrade_from: str | None = None,
) -> Command:
    """:func:`update_command` for a bundle whose ``facts`` HQ has already (a bundle HQ keeps,
    :mod:`hq.rollouts`): nothing is read from the file.

    Raises:
        ValueError: ``url`` is not http(s).
    """
    _check_bundle_url(url)
    args: dict[str, str | int | bool] = {
        "url": url,
        "sha256": facts.sha256,
        "size": facts.size,
        "version": facts.version,
    }
    if allow_downgrade_from is not None:
        step: dict[str, str | int | bool] = {
            "from_version": allow_downgrade_from,
            "to_version": facts.version,
            "sha256": facts.sha256,
        }
        allowance = sign_command(
            key, device_id, "allow_rollback", step, ttl + timedelta(days=1), now
        )
        args["rollback_allowance"] = allowance.to_bytes().decode()
    return sign_command(key, device_id, "update", args, ttl, now, transaction)


GIVE_UP_S = 3.0
"""How long HQ's commands keep trying a broker whose connection attempts fail (a broker
restarting is back within it) before they say it is unreachable."""


def _one_shot(config: HqConfig, subscriptions: tuple[tuple[str, int], ...] = ()) -> MqttLink:
    link = hq_link(
        config, f"{config.client_id}-cli-{secrets.token_hex(3)}", subscriptions, clean_start=True
    )
    link.start()
    # someone waits for the command: a broker that is not there is said within seconds
    if not link.wait_connected(15, give_up_s=GIVE_UP_S):
        link.close()
        raise ConnectionError(f"broker {config.broker_host}:{config.broker_port} unreachable")
    return link


def send_command(config: HqConfig, command: Command, timeout_s: float = 30.0) -> CommandResult:
    """Publishes ``command`` and waits for its result (MQTT 5 response topic + correlation)."""
    topics = Topics(config.topic_prefix)
    # The device may only publish on its own topics, so that is where its answer comes back.
    reply = topics.command_result(command.device_id)
    link = _one_shot(config, ((reply, 1),))
    correlation = command.transaction.encode()
    try:  # connected means subscribed: the answer cannot come before the subscription
        publish_command(link, topics, command)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                item = link.inbox.get(timeout=0.5)
            except Exception:
                continue
            if not isinstance(item, Inbound):
                continue
            link.ack(item)
            if item.correlation != correlation:
                continue
            try:
                return decode(CommandResult, item.payload)
            except ProtocolError:
                continue
        raise TimeoutError(f"no result from {command.device_id} in {timeout_s:.0f} s")
    finally:
        link.close()


def publish_once(
    config: HqConfig,
    topic: str,
    message: Message,
    retain: bool = False,
    expiry_s: int | None = None,
) -> None:
    link = _one_shot(config)
    try:
        link.publish(topic, message.to_bytes(), qos=1, retain=retain, expiry_s=expiry_s)
    finally:
        link.close()


def push_catalogue(
    config: HqConfig, catalogue: Catalogue, pictures: dict[str, bytes] | None = None
) -> Catalogue:
    """Signs ``catalogue`` with HQ's command key (kiosks refuse one it did not sign) and
    publishes it, retained; first the chunks of the pictures it names that are given
    (``{sha256: file}``, each already checked), retained too, for the kiosks that lack them
    to fetch (:mod:`edge.sync.pictures`). Returns what was published.

    Raises:
        ValueError: no command key is configured.
        ConnectionError: the broker is unreachable.
    """
    if not config.command_key:
        raise ValueError("no command key to sign the catalogue: pass --tls-dir or command_key")
    key = load_command_key(Path(config.command_key))
    signed = sign_message(key, CATALOGUE_SIGNING_DOMAIN, catalogue)
    topics = Topics(config.topic_prefix)
    link = _one_shot(config)
    try:
        for data in (pictures or {}).values():
            for chunk in picture_chunks(data):
                link.publish(
                    topics.picture(chunk.sha256, chunk.index), chunk.to_bytes(), 1, retain=True
                )
        link.publish(topics.catalogue(), signed.to_bytes(), qos=1, retain=True)
    finally:
        link.close()
    return signed


def push_rules(config: HqConfig, rules: Rules) -> Rules:
    """Signs ``rules`` with HQ's command key (kiosks refuse rules it did not sign) and
    publishes them, retained; returns what was published.

    Raises:
        ValueError: no command key is configured.
    """
    if not config.command_key:
        raise ValueError("no command key to sign the rules: pass --tls-dir or command_key")
    key = load_command_key(Path(config.command_key))
    signed = sign_message(key, RULES_SIGNING_DOMAIN, rules)
    publish_once(config, Topics(config.topic_prefix).rules(), signed, retain=True)
    return signed


def push_staff_list(config: HqConfig, staff_list: StaffList) -> StaffList:
    """Signs a store's staff list with HQ's command key (kiosks refuse lists it did not sign)
    and publishes it, retained, on the store's topic; returns what was published.

    Raises:
        ValueError: no command key is configured.
        ConnectionError: the broker is unreachable.
    """
    if not config.command_key:
        raise ValueError("no command key to sign the staff list: pass --tls-dir or command_key")
    key = load_command_key(Path(config.command_key))
    signed = sign_message(key, STAFF_SIGNING_DOMAIN, staff_list)
    publish_once(
        config, Topics(config.topic_prefix).staff(staff_list.store_id), signed, retain=True
    )
    return signed


def push_campaigns(config: HqConfig, campaigns: Campaigns) -> Campaigns:
    """Signs HQ's campaigns document with the command key (kiosks refuse one it did not
    sign) and publishes it, retained; returns what was published.

    Raises:
        ValueError: no command key is configured.
        ConnectionError: the broker is unreachable.
    """
    if not config.command_key:
        raise ValueError("no command key to sign the campaigns: pass --tls-dir or command_key")
    key = load_command_key(Path(config.command_key))
    signed = sign_message(key, CAMPAIGNS_SIGNING_DOMAIN, campaigns)
    publish_once(config, Topics(config.topic_prefix).campaigns(), signed, retain=True)
    return signed
