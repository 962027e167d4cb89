"""``kiosk hq import``: a chain's members from its earlier system's CSV export into HQ.

Each row is checked on its own; a row that fails is refused with its reason (kept in
``hq_import_refusal`` and written to the report) and the others go in. Rows are committed in
chunks together with how far the file got, so an interrupted import resumes where it stopped
when run again on the same file, and a finished one changes nothing. Each member's balance
becomes opening lots with their expiry dates (and the ledger entries that credit them), so
nothing about expiry is lost. Phone numbers are sealed with HQ's data key and hashed with the
chain's lookup key, as the kiosks keep them.

Columns are found by their header, in English or Chinese (:data:`COLUMNS`); the file may be
UTF-8 (with or without Excel's byte-order mark) or GB18030 (a Chinese Excel's "CSV").
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from edge.domain.cards import CARD_PREFIX, parse_card_number
from edge.domain.errors import InvalidInput, KioskError
from edge.domain.ids import IdFactory
from edge.domain.text import escape_controls, fold_digits
from edge.security.personal import PhoneVault, mask_phone, normalize_phone
from hq.feeds import IMPORTED_CONSENT, add_members_to_stores
from hq.models import (
    CentralCard,
    CentralEntry,
    CentralLot,
    CentralMember,
    EnrolledDevice,
    ImportRefusal,
    MemberImport,
)
from hq.personal import personal_columns
from hq.rollups import Rollup

# The field each header names: the common spellings of the chain systems' exports.
COLUMNS: dict[str, tuple[str, ...]] = {
    "card_no": ("card_no", "card", "card number", "卡号", "会员卡号"),
    "phone": ("phone", "mobile", "phone number", "手机", "手机号", "手机号码"),
    "name": ("name", "姓名", "会员姓名"),
    "birthday": ("birthday", "birth date", "生日", "出生日期"),
    "home_store": ("home_store", "store", "store_id", "门店", "开卡门店", "所属门店"),
    "tier": ("tier", "level", "等级", "会员等级"),
    "points": ("points", "balance", "积分", "积分余额"),
    "points_expire": ("points_expire", "expires", "expiry", "积分到期", "积分到期日"),
    "lots": ("lots", "积分明细"),
    "registered_at": ("registered_at", "registered", "注册日期", "开卡日期"),
}
REQUIRED = ("card_no", "home_store")
TIER_NAMES = {"普通会员": "normal", "银卡会员": "silver", "金卡会员": "gold", "钻石会员": "diamond"}
DEFAULT_TIERS = ("normal", "silver", "gold", "diamond")
CARD = re.compile(r"^[0-9]{6,20}$")
STORE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHUNK = 2000
IMPORT_DEVICE = "hq-import"


@dataclass(frozen=True)
class Lot:
    points: int
    expires: date


@dataclass(frozen=True)
class MemberRow:
    """One row, checked."""

    line: int
    card_no: str
    phone: str | None
    name: str | None
    birthday: date | None
    home_store: str
    tier: str
    lots: tuple[Lot, ...]
    registered_at: datetime | None


@dataclass
class ImportReport:
    import_id: str
    file: str
    imported: int = 0
    refused: int = 0
    points: int = 0
    expired_points: int = 0
    resumed_at_line: int = 0
    already_done: bool = False
    refusals: list[tuple[int, str, str]] = field(default_factory=list)  # this run's

    def as_dict(self) -> dict[str, object]:
        return {
            "import_id": self.import_id,
            "file": self.file,
            "imported": self.imported,
            "refused": self.refused,
            "points": self.points,
            "expired_points": self.expired_points,
            "resumed_at_line": self.resumed_at_line,
            "already_done": self.already_done,
        }


class Refused(Exception):
    """Why one row cannot go in (a sentence for the report)."""


def _date(text: str, what: str) -> date:
    cleaned = fold_digits(text.strip(), what).replace("/", "-").replace(".", "-")
    if re.fullmatch(r"[0-9]{8}", cleaned):
        cleaned = f"{cleaned[:4]}-{cleaned[4:6]}-{cleaned[6:]}"
    try:
        return date.fromisoformat(cleaned[:10])
    except ValueError:
        raise Refused(f"{what} {escape_controls(text)[:20]!r} is not a date (YYYY-MM-DD)") from None


def _points(text: str) -> int:
    cleaned = fold_digits(text.strip().replace(",", ""), "points")
    if not re.fullmatch(r"[0-9]{1,12}", cleaned):
        raise Refused(f"points {escape_controls(text)[:20]!r} is not a whole number")
    return int(cleaned)


def parse_row(line: int, raw: dict[str, str], stores: set[str], tiers: set[str]) -> MemberRow:
    """The row checked, or :class:`Refused` with the first thing wrong in it."""

    def get(name: str) -> str:
        return (raw.get(name) or "").strip()

    card_no = fold_digits(get("card_no"), "the card number") if get("card_no") else ""
    if not CARD.fullmatch(card_no):
        raise Refused("the card number must be 6 to 20 digits")
    try:
        card_no = parse_card_number(card_no)
    except KioskError:
        # The kiosks and lanes read the chain's own numbering only: such a card would be
        # imported but refused at every till. Replacing it at the desk issues one they read.
        raise Refused(
            f"card {card_no} is not a card number the kiosks read (13 digits from "
            f"{CARD_PREFIX}, with its check digit)"
        ) from None
    phone = None
    if get("phone"):
        try:
            phone = normalize_phone(get("phone"))
        except InvalidInput:
            raise Refused("the phone number is not a mobile number (11 digits from 1)") from None
    name = get("name") or None
    if name is not None and (len(name) > 64 or escape_controls(name) != name):
        raise Refused("the name is longer than 64 characters or holds control characters")
    birthday = _date(get("birthday"), "the birthday") if get("birthday") else None
    store = get("home_store")
    if not STORE.fullmatch(store) or store not in stores:
        raise Refused(f"unknown store {escape_controls(store)[:64]!r}")
    tier_text = get("tier") or "normal"
    tier = TIER_NAMES.get(tier_text, tier_text.lower())
    if tier not in tiers:
        raise Refused(f"unknown tier {escape_controls(tier_text)[:32]!r}")
    lots: list[Lot] = []
    if get("lots"):
        for part in re.split(r"[;；|]", get("lots")):
            if not part.strip():
                continue
            amount, sep, expires = part.partition("@")
            if not sep:
                raise Refused("lots are written POINTS@YYYY-MM-DD;POINTS@YYYY-MM-DD")
            lots.append(Lot(_points(amount), _date(expires, "the points' expiry")))
    elif get("points"):
        points = _points(get("points"))
        if points and not get("points_expire"):
            raise Refused("points without an expiry date (points_expire)")
        if points:
            lots.append(Lot(points, _date(get("points_expire"), "the points' expiry")))
    registered = get("registered_at")
    registered_at = (
        datetime.combine(_date(registered, "the registration date"), time(), UTC)
        if registered
        else None
    )
    return MemberRow(line, card_no, phone, name, birthday, store, tier, tuple(lots), registered_at)


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput("the file is neither UTF-8 nor GB18030 text", code="bad_import_file")


@dataclass
class Export:
    """A CSV export, read once: its SHA-256, how many data rows it has, and its rows as
    field -> text with the file's line number of each."""

    path: Path
    sha256: str
    rows: int
    lines: Iterator[tuple[int, dict[str, str]]]


def read_export(path: Path) -> Export:
    """Reads and checks an export (see :class:`Export`).

    Raises:
        InvalidInput: unreadable, not text, or a required column missing (one line, naming
            the headers it looked for).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror or exc}", code="bad_import_file"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise InvalidInput(f"{path} is empty", code="bad_import_file")
    wanted = {alias.lower(): name for name, aliases in COLUMNS.items() for alias in aliases}
    positions: dict[str, int] = {}
    for i, title in enumerate(header):
        name = wanted.get(title.strip().lower())
        if name is not None and name not in positions:
            positions[name] = i
    missing = [n for n in REQUIRED if n not in positions]
    if missing:
        looked = "; ".join(f"{n}: {', '.join(COLUMNS[n])}" for n in missing)
        raise InvalidInput(f"{path} has no column for {looked}", code="bad_import_file")
    rows = max(0, text.count("\n") - 1 + (0 if text.endswith("\n") else 1))

    def iterate() -> Iterator[tuple[int, dict[str, str]]]:
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            yield number, {n: values[i] if i < len(values) else "" for n, i in positions.items()}

    return Export(path, digest, rows, iterate())


class MemberImporter:
    """Brings a CSV export into HQ's database (see the module's description)."""

    def __init__(
        self,
        engine: Engine,
        vault: PhoneVault,
        stores: set[str] | None = None,
        tiers: tuple[str, ...] = DEFAULT_TIERS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.extra_stores = stores or set()
        self.tiers = set(tiers)
        self.now = now
        self.ids = IdFactory()

    def _stores(self, session: Session) -> set[str]:
        enrolled = set(session.scalars(select(EnrolledDevice.store_id).distinct()))
        return enrolled | self.extra_stores

    def run(self, export: Export, progress: Callable[[int], None] = lambda n: None) -> ImportReport:
        path, digest, rows = export.path, export.sha256, export.lines
        with Session(self.engine) as session, session.begin():
            record = session.scalar(select(MemberImport).where(MemberImport.file_sha256 == digest))
            if record is None:
                record = MemberImport(
                    id=self.ids.new(),
                    file_sha256=digest,
                    file_name=str(path)[-256:],
                    lines_done=1,
                    imported=0,
                    refused=0,
                    points=0,
                    expired_points=0,
                    started_at=self.now(),
                )
                session.add(record)
            report = ImportReport(record.id, str(path))
            report.already_done = record.finished_at is not None
            report.resumed_at_line = record.lines_done if record.lines_done > 1 else 0
            done_to = record.lines_done
            stores = self._stores(session)
        if report.already_done:
            return self._totals(report)
        chunk: list[tuple[int, dict[str, str]]] = []
        for number, raw in rows:
            if number <= done_to:
                progress(1)
                continue
            chunk.append((number, raw))
            if len(chunk) >= CHUNK:
                self._store(chunk, report, stores)
                progress(len(chunk))
                chunk = []
        self._store(chunk, report, stores, last=True)
        progress(len(chunk))
        return self._totals(report)

    def _totals(self, report: ImportReport) -> ImportReport:
        with Session(self.engine) as session:
            record = session.get(MemberImport, report.import_id)
            if record is None:
                raise RuntimeError(f"import {report.import_id} is not recorded")
            report.imported, report.refused = record.imported, record.refused
            report.points, report.expired_points = record.points, record.expired_points
        return report

    def _store(
        self,
        chunk: list[tuple[int, dict[str, str]]],
        report: ImportReport,
        stores: set[str],
        last: bool = False,
    ) -> None:
        """One transaction: the chunk's members, cards, lots and entries, its refusals, and
        how far the file got."""
        now = self.now()
        today = now.date()
        checked: list[MemberRow] = []
        refusals: list[tuple[int, str, str]] = []
        for number, raw in chunk:
            try:
                checked.append(parse_row(number, raw, stores, self.tiers))
            except (Refused, InvalidInput) as exc:
                refusals.append((number, (raw.get("card_no") or "")[:64], str(exc)[:256]))
        with Session(self.engine) as session, session.begin():
            cards = [r.card_no for r in checked]
            taken = set(
                session.scalars(select(CentralCard.card_no).where(CentralCard.card_no.in_(cards)))
            )
            hashes = {r.line: self.vault.lookup_hash(r.phone) for r in checked if r.phone}
            known_phones = set(
                session.scalars(
                    select(CentralMember.phone_hash).where(
                        CentralMember.phone_hash.in_(list(hashes.values()))
                    )
                )
            )
            members, card_rows, lots, entries = [], [], [], []
            rollup = Rollup()  # for the reports: members joining, their opening points
            seen_cards: dict[str, int] = {}
            seen_phones: dict[str, int] = {}
            imported = points_in = expired = 0
            for row in checked:
                phone_hash = hashes.get(row.line)
                if row.card_no in taken:
                    refusals.append((row.line, row.card_no, "duplicate card: already at HQ"))
                    continue
                if row.card_no in seen_cards:
                    reason = f"duplicate card: also on line {seen_cards[row.card_no]}"
                    refusals.append((row.line, row.card_no, reason))
                    continue
                if phone_hash is not None and phone_hash in known_phones:
                    refusals.append((row.line, row.card_no, "the phone belongs to another member"))
                    continue
                if phone_hash is not None and phone_hash in seen_phones:
                    reason = f"the phone is also on line {seen_phones[phone_hash]}"
                    refusals.append((row.line, row.card_no, reason))
                    continue
                seen_cards[row.card_no] = row.line
                if phone_hash is not None:
                    seen_phones[phone_hash] = row.line
                member_id = self.ids.new()
                at = row.registered_at or now
                balance = 0
                for lot in row.lots:
                    if lot.expires < today:
                        expired += lot.points
                        continue
                    lot_id = self.ids.new()
                    expires_at = datetime.combine(lot.expires, time(23, 59, 59), UTC)
                    lots.append(
                        {"id": lot_id, "member_id": member_id, "points": lot.points,
                         "expires_at": expires_at, "source": report.import_id}
                    )  # fmt: skip
                    entries.append(
                        {"id": self.ids.new(), "member_id": member_id, "kind": "opening",
                         "points": lot.points, "lot_id": lot_id, "ref": report.import_id,
                         "store_id": row.home_store, "device_id": IMPORT_DEVICE, "at": at,
                         "event_id": report.import_id, "available_at": at,
                         "expires_at": expires_at, "tier": row.tier}
                    )  # fmt: skip
                    rollup.entry(at, row.home_store, row.tier, "opening", lot.points)
                    balance += lot.points
                members.append(
                    {"id": member_id, "store_id": row.home_store, "tier": row.tier,
                     "phone_masked": mask_phone(row.phone) if row.phone else "",
                     "balance": balance, "overdraft_flagged": False, "deleted": False,
                     "created_at": at, "updated_at": now, "phone_hash": phone_hash,
                     "phone_enc": self.vault.encrypt(row.phone) if row.phone else None,
                     **personal_columns(self.vault, row.name, row.birthday),
                     "consent_version": IMPORTED_CONSENT}
                )  # fmt: skip
                card_rows.append(
                    {"card_no": row.card_no, "member_id": member_id, "state": "active",
                     "store_id": row.home_store}
                )  # fmt: skip
                rollup.joined(at, row.home_store)
                imported += 1
                points_in += balance
            for table, new_rows in (
                (CentralMember, members),
                (CentralCard, card_rows),
                (CentralLot, lots),
                (CentralEntry, entries),
            ):
                if new_rows:
                    session.execute(insert(table), new_rows)
            rollup.write(session)  # before the feeds' numbers, as the ingest (hq.rollups)
            # Each home store's kiosks receive their new members through the store's feed.
            homes: dict[str, list[str]] = {}
            for member in members:
                homes.setdefault(str(member["store_id"]), []).append(str(member["id"]))
            add_members_to_stores(session, homes, now)
            if refusals:
                session.execute(
                    insert(ImportRefusal),
                    [
                        {"import_id": report.import_id, "line": n, "card_no": c, "reason": r}
                        for n, c, r in refusals
                    ],
                )
            done_to = max((n for n, _ in chunk), default=0)
            values: dict[str, object] = {
                "imported": MemberImport.imported + imported,
                "refused": MemberImport.refused + len(refusals),
                "points": MemberImport.points + points_in,
                "expired_points": MemberImport.expired_points + expired,
            }
            if done_to:
                values["lines_done"] = done_to
            if last:
                values["finished_at"] = now
            session.execute(
                update(MemberImport).where(MemberImport.id == report.import_id).values(**values)
            )
        report.refusals += sorted(refusals)
