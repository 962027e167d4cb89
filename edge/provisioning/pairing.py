"""Pairing: a one-time code and the certificate request, printed on a slip for HQ.

The technician registers the device at HQ with the slip (its QR code carries the serial, the
code and the request); HQ answers with an enrolment bundle bound to that code. Printing a
slip is recorded in the device's audit chain (the code itself is not: only its hash is kept,
in ``provisioning/pairing.json``, until an enrolment uses it).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.printer.document import Cut, Feed, Qr, Receipt, Rule, Text, columns
from edge.domain.errors import Refusal
from edge.provisioning.bundle import code_digest, pairing_qr_text
from edge.provisioning.history import record_provisioning
from edge.provisioning.identity import certificate_request, device_serial, ensure_device_key

__all__ = [
    "PAIRING_FILE",
    "PairingRequest",
    "check_pairing",
    "code_digest",
    "pairing_slip",
    "retire_pairing",
    "start_pairing",
]

PAIRING_FILE = Path("provisioning/pairing.json")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed
CODE_LENGTH = 10
PAIRING_TTL = timedelta(days=7)


@dataclass(frozen=True)
class PairingRequest:
    serial: str
    code: str
    csr_der: bytes
    expires_at: datetime

    @property
    def qr_text(self) -> str:
        return pairing_qr_text(self.serial, self.code, self.csr_der)


def start_pairing(
    data_dir: Path,
    *,
    serial: str | None = None,
    now: datetime | None = None,
    actor: str = "technician",
    config_path: Path | None = None,
) -> PairingRequest:
    """A fresh one-time code (replacing any earlier one) and the CSR for the device's key.

    Recorded in the device's audit chain (``provision.pairing``); the database is created
    if the device has none yet.
    """
    now = now or datetime.now(UTC)
    serial = serial or device_serial()
    key = ensure_device_key(data_dir / "tls" / "device.key")
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    request = PairingRequest(serial, code, certificate_request(key, serial), now + PAIRING_TTL)
    path = data_dir / PAIRING_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    with record_provisioning(data_dir, config_path) as history:
        history.audit(
            actor,
            "provision.pairing",
            serial,
            expires_at=request.expires_at.isoformat(),
            code_sha256=code_digest(code),
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "serial": serial,
                    "code_sha256": code_digest(code),
                    "expires_at": request.expires_at.isoformat(),
                }
            ),
            encoding="utf-8",
        )
        os.replace(tmp, path)
    return request


@dataclass(frozen=True)
class PendingPairing:
    """The pairing request waiting for HQ's bundle, as ``start_pairing`` stored it."""

    serial: str
    code_sha256: str
    expires_at: datetime


def pending_pairing(data_dir: Path) -> PendingPairing | None:
    """The stored pairing request, expired or not; None if there is none (or it is damaged)."""
    try:
        raw = json.loads((data_dir / PAIRING_FILE).read_text(encoding="utf-8"))
        return PendingPairing(
            str(raw["serial"]), str(raw["code_sha256"]), datetime.fromisoformat(raw["expires_at"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_pairing(data_dir: Path, code: str, now: datetime | None = None) -> str:
    """The serial of the pending pairing if ``code`` is its code (nothing is changed).

    Raises:
        Refusal: no pairing is pending, it expired, or the code is another one.
    """
    pending = pending_pairing(data_dir)
    if pending is None:
        raise Refusal("no pairing in progress: print a pairing slip first", code="not_pairing")
    if pending.expires_at < (now or datetime.now(UTC)):
        raise Refusal("the pairing code expired: print a new slip", code="pairing_expired")
    if not hmac.compare_digest(pending.code_sha256, code_digest(code)):
        raise Refusal("the bundle was issued for another pairing code", code="pairing_mismatch")
    return pending.serial


def retire_pairing(data_dir: Path) -> None:
    """The pending pairing's one-time code is used up (an enrolment applied it)."""
    (data_dir / PAIRING_FILE).unlink(missing_ok=True)


def pairing_slip(request: PairingRequest, printed_at: str) -> Receipt:
    """The slip the technician takes to HQ (bilingual; the QR carries everything)."""
    width = 32
    grouped = " ".join(request.code[i : i + 5] for i in range(0, len(request.code), 5))
    steps = (
        Text("会员中心 Member Center", "center", bold=True),
        Text("设备配对 Device pairing", "center", big=True),
        Rule(),
        Text(columns("序列号 Serial", request.serial, width)),
        Text(columns("时间 Time", printed_at, width)),
        Text(columns("有效至 Valid until", request.expires_at.strftime("%Y-%m-%d"), width)),
        Rule(),
        Text("配对码 Pairing code", "center"),
        Text(grouped, "center", big=True),
        Qr(request.qr_text),
        Text("请在总部系统登记此设备", "center"),
        Text("Register this device at HQ", "center"),
        Feed(2),
        Cut(),
    )
    return Receipt("pairing-slip", steps)
