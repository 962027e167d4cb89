"""The shipped Mosquitto configuration, its ACL, bridge, and a development CA.

``render_broker`` writes a complete, runnable broker directory: CA, server and client
certificates (CN = device id), HQ's command key pair, ``acl``, ``mosquitto.conf`` and, for a
store broker (``hq_address`` given), ``conf.d/bridge-<store>.conf``. Tests start Mosquitto on
exactly this output; production uses the same templates with certificates from the chain's
real CA.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.protocol import DEFAULT_PREFIX, DEVICES, TOPIC_TABLE, Role, TopicSpec, check_name
from edge.security.revocation import crl_pem

HERE = Path(__file__).parent
Access = Literal["write", "read"]


@dataclass(frozen=True)
class Identity:
    """A client of the broker: its certificate CN, what it is and which store it belongs to."""

    cn: str
    role: Role
    store_id: str = ""

    def __post_init__(self) -> None:
        if self.role == "bridge" and self.cn != f"bridge-{self.store_id}":
            raise ValueError(
                f"the bridge of store {self.store_id!r} is called bridge-{self.store_id}, "
                f"not {self.cn!r}"
            )

    @classmethod
    def parse(cls, spec: str) -> Identity:
        """``role:cn[:store]``, e.g. ``kiosk:K001:S001``."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in get_args(Role):
            raise ValueError(f"expected role:cn[:store], got {spec!r}")
        role: Role = parts[0]  # type: ignore[assignment]
        store = parts[2] if len(parts) == 3 else ""
        if role != "hq" and not store:
            raise ValueError(f"a {role} belongs to a store: {spec!r}")
        return cls(check_name(parts[1]), role, check_name(store) if store else "")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Member Center Kiosk (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class DevCA:
    """A development certificate authority kept in ``directory`` (ca.crt, ca.key)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() != key_path.exists():
            # A new CA would overwrite the chain's ca.crt and sign everything with a stray key.
            raise ValueError(f"{directory}: ca.crt and ca.key go together (copy both, or neither)")
        if cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key = key
            self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Member Center Kiosk dev CA"))
            .issuer_name(_name("Member Center Kiosk dev CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(self.key))
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, cn: str, *, server: bool = False, hosts: tuple[str, ...] = (), days: int = 825
    ) -> tuple[Path, Path]:
        """Writes ``<cn>.crt`` and ``<cn>.key``; a client certificate unless ``server``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{cn}.crt", self.directory / f"{cn}.key"
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def write_empty_crl(self, path: Path) -> Path:
        """An empty revocation list signed by this CA, for a broker's ``crlfile`` until HQ's
        enrolment desk writes the real one."""
        path.write_bytes(crl_pem(self.cert, self.key, (), dt.datetime.now(dt.UTC)))
        return path


def write_command_keys(directory: Path) -> tuple[Path, Path]:
    """HQ's Ed25519 command-signing key pair (``hq-command.key``, ``hq-command.pub``)."""
    key = Ed25519PrivateKey.generate()
    private, public = directory / "hq-command.key", directory / "hq-command.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _parties(spec: TopicSpec, access: Access) -> tuple[Role, ...]:
    return spec.publishers if access == "write" else spec.subscribers


def _every_device(spec: TopicSpec, access: Access) -> bool:
    """A device topic that every device may use on its own id: one ``pattern`` line (``%u``
    is the client's CN) serves them all, whatever certificate of the chain's CA connects."""
    return spec.tree == "device" and set(DEVICES) <= set(_parties(spec, access))


def _pushes(roles: tuple[Role, ...], access: Access, store_id: str) -> list[tuple[str, int]]:
    """HQ's pushes (``hq/...``) that any of ``roles`` of ``store_id`` may use, as (topic
    levels, QoS): all of them as one ``hq/#`` (what a bridge's ``topic hq/# in`` subscribes
    to), or one by one. A push to one store (``{store}`` in its pattern, the staff list) is
    that store's only, so once the table has one the pushes are listed one by one: ``hq/#``
    would let a kiosk read every store's."""
    pushes = [s for s in TOPIC_TABLE if s.tree == "hq"]
    allowed = [s for s in pushes if set(roles) & set(_parties(s, access))]
    if allowed == pushes and not any("store" in s.ids for s in pushes):
        return [("hq/#", max(s.qos for s in pushes))]
    if not store_id and any("store" in s.ids for s in allowed):
        raise ValueError("a push to one store needs the store of whoever reads it")
    return [
        (s.levels(store=check_name(store_id)) if "store" in s.ids else s.levels(), s.qos)
        for s in allowed
    ]


def _device_acl(ident: Identity, access: Access, prefix: str) -> list[str]:
    """What a kiosk or a lane may use beyond the patterns, from the table's rows: its own
    device id and store filled in, its own lane for a lane and every lane of its store for a
    kiosk, and HQ's pushes."""
    own = {"device": ident.cn, "store": ident.store_id}
    if ident.role == "lane":
        own["lane"] = ident.cn
    filters = [
        spec.fill(prefix, **own)
        for spec in TOPIC_TABLE
        if ident.role in _parties(spec, access)
        and spec.tree != "hq"
        and not _every_device(spec, access)
    ]
    pushes = _pushes((ident.role,), access, ident.store_id)
    return [*filters, *(f"{prefix}/{levels}" for levels, _ in pushes)]


def _bridge_acl(ident: Identity, devices: list[str], prefix: str) -> list[str]:
    """A store's bridge speaks for that store's kiosks and lanes only: their whole device
    subtrees both ways, the pushes they read, and its own connection state."""
    lines = [f"topic readwrite {prefix}/device/{device}/#" for device in devices]
    pushes = _pushes(DEVICES, "read", ident.store_id)
    lines += [f"topic read {prefix}/{levels}" for levels, _ in pushes]
    return [*lines, f"topic write {prefix}/bridge/{ident.store_id}/#"]


def render_acl(identities: list[Identity], prefix: str = DEFAULT_PREFIX) -> str:
    """The ACL, from the protocol's table: the patterns every device shares (``base.acl``),
    then one section per identity that may use more."""
    patterns = {
        access: "\n".join(
            f"pattern {access} {spec.fill(prefix, device='%u')}"
            for spec in TOPIC_TABLE
            if _every_device(spec, access)
        )
        for access in ("write", "read")
    }
    header = Template((HERE / "base.acl").read_text()).substitute(
        device_writes=patterns["write"], device_reads=patterns["read"]
    )
    lines = [header.rstrip(), ""]
    for ident in identities:
        lines.append(f"user {ident.cn}")
        if ident.role == "hq":  # the system of record: every device, every store, the bridges
            lines.append(f"topic readwrite {prefix}/#")
        elif ident.role == "bridge":
            store_devices = [
                i.cn for i in identities if i.store_id == ident.store_id and i.role in DEVICES
            ]
            lines += _bridge_acl(ident, store_devices, prefix)
        else:
            for access in ("write", "read"):
                lines += [f"topic {access} {f}" for f in _device_acl(ident, access, prefix)]
        lines.append("")
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(
    directory: Path,
    port: int,
    bind: str = "127.0.0.1",
    max_queued: int = 1000,
    log_dest: str = "stderr",
) -> str:
    template = Template((HERE / "mosquitto.template.conf").read_text())
    return template.substitute(
        port=port,
        bind=bind,
        tls_dir=directory,
        acl_file=directory / "acl",
        persistence_dir=directory / "data",
        conf_dir=directory / "conf.d",
        user=getpass.getuser(),
        max_queued=max_queued,
        log_dest=log_dest,
    )


def _check_hq_address(hq_address: str) -> None:
    host, sep, port = hq_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"HQ's broker address is host:port, got {hq_address!r}")


def _bridge_topics(device: str, prefix: str) -> str:
    """One device's topics across the bridge, from the table: what a device publishes goes
    out to HQ, what it subscribes to comes in."""
    lines = []
    crossings: tuple[tuple[str, Access], ...] = (("out", "write"), ("in", "read"))
    for direction, access in crossings:
        for spec in TOPIC_TABLE:
            if spec.tree == "device" and set(DEVICES) & set(_parties(spec, access)):
                level = spec.levels(device=device)
                lines.append(f"topic {level} {direction} {spec.qos} {prefix}/ {prefix}/")
    return "\n".join(lines)


def _bridge_pushes(store_id: str, prefix: str) -> str:
    """HQ's pushes that the store's devices read, in from HQ: the chain's and the store's."""
    return "\n".join(
        f"topic {levels} in {qos} {prefix}/ {prefix}/"
        for levels, qos in _pushes(DEVICES, "read", store_id)
    )


def render_bridge_conf(
    store_id: str,
    hq_address: str,
    tls_dir: Path,
    devices: list[str],
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The store's bridge to HQ: chain-wide pushes in, and one block per device of the store."""
    _check_hq_address(hq_address)
    if not devices:
        raise ValueError(f"store {store_id} has no kiosk or lane to bridge")
    block = Template((HERE / "bridge-device.template.conf").read_text())
    blocks = [
        block.substitute(device=check_name(d), topics=_bridge_topics(d, prefix)) for d in devices
    ]
    template = Template((HERE / "bridge.template.conf").read_text())
    return (
        template.substitute(
            store=check_name(store_id),
            hq_address=hq_address,
            tls_dir=tls_dir,
            prefix=prefix,
            pushes=_bridge_pushes(store_id, prefix),
            devices="\n".join(blocks).rstrip() + "\n",
        ).rstrip()
        + "\n"
    )


def render_broker(
    directory: Path,
    port: int,
    identities: list[Identity],
    *,
    bind: str = "127.0.0.1",
    max_queued: int = 1000,
    prefix: str = DEFAULT_PREFIX,
    hq_address: str | None = None,
) -> Path:
    """A runnable broker directory (dev CA included); returns the path of mosquitto.conf.

    With ``hq_address`` (``host:port`` of HQ's broker) it is a store broker: the one
    ``bridge:`` identity's configuration goes to ``conf.d/bridge-<store>.conf``, carrying the
    topics of that store's kiosks and lanes. Without it (HQ's broker, or a single broker for
    development) nothing is bridged; ``bridge:`` identities only get their ACL sections.
    """
    directory = directory.resolve()
    bridges = [i for i in identities if i.role == "bridge"]
    bridge_conf = ""
    if hq_address is not None:
        if len(bridges) != 1:
            raise ValueError(
                "a store broker needs exactly one bridge:bridge-<store>:<store> identity"
            )
        _check_hq_address(hq_address)
        store = bridges[0].store_id
        devices = [i.cn for i in identities if i.store_id == store and i.role in DEVICES]
        # rendered (and so checked) before anything is written: bad input leaves no directory
        bridge_conf = render_bridge_conf(store, hq_address, directory, devices, prefix)
    ca = DevCA(directory)
    ca.issue("server", server=True, hosts=("localhost", "127.0.0.1", bind))
    for ident in identities:
        ca.issue(ident.cn)
    if not (directory / "hq-command.key").exists():
        write_command_keys(directory)
    if not (directory / "crl.pem").exists():  # HQ's list, once copied here, is kept
        ca.write_empty_crl(directory / "crl.pem")
    (directory / "data").mkdir(exist_ok=True)
    (directory / "conf.d").mkdir(exist_ok=True)
    (directory / "acl").write_text(render_acl(identities, prefix))
    conf = directory / "mosquitto.conf"
    conf.write_text(render_mosquitto_conf(directory, port, bind, max_queued))
    if bridge_conf:
        (directory / "conf.d" / f"bridge-{bridges[0].store_id}.conf").write_text(bridge_conf)
    return conf
