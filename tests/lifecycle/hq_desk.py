"""HQ's enrolment desk (``hq.enrol``) set up for a test: a CA directory with HQ's keys and a
SQLite database beside it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.sync.broker import DevCA, write_command_keys
from hq.enrol import DeskSettings, EnrolmentDesk, write_enrol_key
from hq.service import make_hq_engine


def make_desk(root: Path, ca_dir: Path, **settings: object) -> EnrolmentDesk:
    """HQ's desk on a real SQLite database, signing with the CA in ``ca_dir``."""
    DevCA(ca_dir)
    if not (ca_dir / "hq-command.key").exists():
        write_command_keys(ca_dir)
    if not (ca_dir / "hq-enrol.key").exists():
        write_enrol_key(ca_dir)
    update = ca_dir / "hq-update.pub"
    if not update.exists():
        update.write_bytes(
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    base = DeskSettings(
        ca_dir=ca_dir,
        enrol_key=ca_dir / "hq-enrol.key",
        command_key=ca_dir / "hq-command.key",
        update_key=update,
        broker_host="127.0.0.1",
        broker_port=8883,
        rules_version="2026.03",
        catalogue_version="2026.03-2",
    )
    engine = make_hq_engine(f"sqlite+pysqlite:///{root / 'hq.db'}")
    return EnrolmentDesk(engine, replace(base, **settings))  # type: ignore[arg-type]
