"""HQ's gift catalogue and rules for every kiosk, each change a new version: who made it,
when, why and what changed, signed with HQ's command key and published retained.

The console's "Catalogue and rules" page and ``kiosk hq catalogue|rules ...`` call the same
:class:`CatalogueDesk`. HQ numbers the versions: an edit takes the kind's counter row
(``hq_counter``, ``catalogue`` or ``rules``) first in its transaction, which holds every
other editor of that kind until it commits, and an edit made on an older version than the
newest (``based_on``) is refused ("changed meanwhile") instead of overwriting what the
other person did. Nothing is published before the version is committed; a version the
broker did not take stays recorded as not published, and :meth:`CatalogueDesk.publish`
(``kiosk hq catalogue|rules publish``, and the HQ service on start and every minute) sends
the newest: it is retained, so the newest is all a kiosk needs. Gift pictures are kept once
by SHA-256 (``hq_picture``), whichever gifts and versions name them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edge.domain.errors import ConfigError, InvalidInput, NotFound, Refusal
from edge.domain.gifts import validate_sku
from edge.protocol import (
    Catalogue,
    CatalogueGift,
    OfflineRules,
    PointsRules,
    ProtocolError,
    Rules,
    TierPolicy,
    decode,
)
from edge.protocol.pictures import CheckedPicture, PictureRefused, check_picture
from hq import audit
from hq.audit import Actor
from hq.catalogue_diff import CatalogueDiff, RulesDiff, diff_catalogues, diff_rules
from hq.models import ChainCounter, DocumentVersion, FleetDevice, GiftPicture

if TYPE_CHECKING:
    from hq.service import HqConfig

CATALOGUE = "catalogue"
RULES = "rules"
KINDS = (CATALOGUE, RULES)
RACE_RETRIES = 8
NOTE_MAX = 256

# What an edit of a gift may set (its SKU names it; its picture comes as a file).
GIFT_FIELDS = frozenset(CatalogueGift.model_fields) - {"v", "sku", "picture"}
# What an edit of the rules may set, by path: a whole section or list, a field of the points
# or offline section, or a field of one tier (``tiers.<code>.<field>``).
RULES_TOP = ("effective_from", "points", "offline", "member_days", "tiers")
RULES_SECTIONS = {
    "points": frozenset(PointsRules.model_fields) - {"v"},
    "offline": frozenset(OfflineRules.model_fields) - {"v"},
}
TIER_FIELDS = frozenset(TierPolicy.model_fields) - {"code"}
_UNSIGNED = {"v", "key_id", "signature"}

Clock = Callable[[], datetime]
D = TypeVar("D", Catalogue, Rules)


class Publisher(Protocol):
    """What publishes a version to every kiosk (signed, retained)."""

    def catalogue(self, catalogue: Catalogue, pictures: dict[str, bytes]) -> None:
        """Publishes ``catalogue`` after the chunks of ``pictures`` ({sha256: file})."""

    def rules(self, rules: Rules) -> None:
        """Publishes ``rules``."""


class BrokerPublisher:
    """Publishes through the broker with :mod:`hq.commands` (signed with HQ's command key,
    a connection for each publication)."""

    def __init__(self, config: HqConfig) -> None:
        """Raises:
        ConfigError: ``no_command_key``: there is no command key to sign with, so nothing
            may be recorded that could not be published.
        """
        if not config.command_key:
            raise ConfigError(
                "no command key to sign the catalogue and rules: pass --tls-dir or "
                "command_key in the config",
                code="no_command_key",
            )
        if not Path(config.command_key).is_file():
            raise ConfigError(f"no command key at {config.command_key}", code="no_command_key")
        self.config = config

    def catalogue(self, catalogue: Catalogue, pictures: dict[str, bytes]) -> None:
        from hq.commands import push_catalogue

        push_catalogue(self.config, catalogue, pictures)

    def rules(self, rules: Rules) -> None:
        from hq.commands import push_rules

        push_rules(self.config, rules)


@dataclass(frozen=True)
class PictureFile:
    """A gift's picture file, checked (:func:`checked_picture`)."""

    data: bytes
    checked: CheckedPicture

    @property
    def sha256(self) -> str:
        return self.checked.sha256


def checked_picture(data: bytes, what: str = "the picture") -> PictureFile:
    """``data`` as a gift's picture, or one line saying why it cannot be one."""
    try:
        return PictureFile(data, check_picture(data))
    except PictureRefused as exc:
        raise InvalidInput(f"{what}: {exc}", code=exc.code) from None


@dataclass(frozen=True)
class VersionRow:
    """One version as the history lists it; ``published_at`` None: the broker has not
    taken it (a newer one may have gone out instead)."""

    kind: str
    version: int
    at: datetime
    actor: str
    source: str
    note: str
    published_at: datetime | None


@dataclass(frozen=True)
class CatalogueVersion:
    row: VersionRow
    catalogue: Catalogue  # unsigned: it is signed when published


@dataclass(frozen=True)
class RulesVersion:
    row: VersionRow
    rules: Rules  # unsigned


@dataclass(frozen=True)
class Recorded:
    """An edit's new version, what it changed, and whether it is published (``problem``:
    why not, when not)."""

    kind: str
    version: int
    diff: CatalogueDiff | RulesDiff
    published: bool
    problem: str = ""


@dataclass(frozen=True)
class Publication:
    """What a publish sent: the newest version of ``kind`` (0: none recorded) and how many
    pictures went with it, or why it could not (``problem``)."""

    kind: str
    version: int
    pictures: int
    published: bool
    problem: str = ""


def _row(v: DocumentVersion) -> VersionRow:
    return VersionRow(v.kind, v.version, v.at, v.actor, v.source, v.note, v.published_at)


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"'{kind}' is neither catalogue nor rules", code="bad_kind")
    return kind


def _json(raw: Mapping[str, Any]) -> bytes:
    def default(value: object) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not a JSON value")

    try:
        return json.dumps(raw, ensure_ascii=False, default=default).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None


def _validated(schema: type[D], raw: Mapping[str, Any]) -> D:
    """``raw`` as ``schema``, checked as the kiosks will check it (one line)."""
    try:
        return decode(schema, _json(raw))
    except ProtocolError as exc:
        raise InvalidInput(str(exc)) from None


def _note(note: str) -> str:
    text = " ".join(note.split())
    if len(text) > NOTE_MAX:
        raise InvalidInput(f"a note is at most {NOTE_MAX} characters", code="bad_note")
    return text


def _lock(session: Session, kind: str) -> int:
    """Takes the kind's counter row, first in the transaction (on SQLite this takes the
    write lock, so what is read next is the newest), and returns the newest version."""
    last = session.execute(
        update(ChainCounter)
        .where(ChainCounter.name == kind)
        .values(value=ChainCounter.value)
        .returning(ChainCounter.value)
    ).scalar_one_or_none()
    if last is None:  # the first version of this kind: the row is made once
        last = session.scalar(
            select(func.max(DocumentVersion.version)).where(DocumentVersion.kind == kind)
        )
        session.add(ChainCounter(name=kind, value=last or 0))
        session.flush()  # two first editors at once: the second loses the race here
    return int(last or 0)


def _highest_reported(session: Session, kind: str) -> int:
    """The highest version of ``kind`` any kiosk reports in its telemetry: HQ's first
    version numbers on from it (kiosks ignore a version not newer than theirs)."""
    field = "catalogue_version" if kind == CATALOGUE else "rules_version"
    highest = 0
    for raw in session.scalars(select(FleetDevice.telemetry).where(FleetDevice.role == "kiosk")):
        try:
            value = json.loads(raw or "{}").get(field, 0)
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            highest = max(highest, value)
    return highest


def _load(session: Session, kind: str, version: int) -> DocumentVersion:
    row = session.get(DocumentVersion, (kind, version))
    if row is None:
        raise NotFound(f"HQ has no {kind} version {version}", code="unknown_version")
    return row


def _newest(session: Session, kind: str) -> DocumentVersion | None:
    return session.scalars(
        select(DocumentVersion)
        .where(DocumentVersion.kind == kind)
        .order_by(DocumentVersion.version.desc())
        .limit(1)
    ).first()


def _previous(session: Session, kind: str, version: int) -> DocumentVersion | None:
    return session.scalars(
        select(DocumentVersion)
        .where(DocumentVersion.kind == kind, DocumentVersion.version < version)
        .order_by(DocumentVersion.version.desc())
        .limit(1)
    ).first()


def _catalogue(row: DocumentVersion) -> Catalogue:
    return Catalogue.model_validate_json(row.document)


def _rules(row: DocumentVersion) -> Rules:
    return Rules.model_validate_json(row.document)


def _number(requested: object, floor: int, kind: str) -> None:
    """Refuses a whole document's own version unless it is at least HQ's next (its model
    has checked it is a version number)."""
    if isinstance(requested, int) and requested < floor:
        raise InvalidInput(
            f"version {requested} is not new: HQ's {kind} is at version {floor - 1} (leave "
            '"version" out and HQ numbers it)',
            code="version_not_new",
        )


@dataclass(frozen=True)
class _Built:
    document: Catalogue | Rules
    pictures: tuple[PictureFile, ...] = ()


class CatalogueDesk:
    """HQ's catalogue and rules on HQ's database (see the module docstring); ``publisher``
    publishes each new version once it is committed (None: recorded only)."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.clock = clock

    # ------------------------------------------------------------------ reading

    def catalogue(self, version: int | None = None) -> CatalogueVersion:
        """Version ``version`` of the catalogue, or the newest.

        Raises:
            NotFound: no such version (``unknown_version``), or none yet (``no_catalogue``).
        """
        with Session(self.engine) as session:
            row = self._version(session, CATALOGUE, version)
            return CatalogueVersion(_row(row), _catalogue(row))

    def rules(self, version: int | None = None) -> RulesVersion:
        """Version ``version`` of the rules, or the newest (NotFound as :meth:`catalogue`)."""
        with Session(self.engine) as session:
            row = self._version(session, RULES, version)
            return RulesVersion(_row(row), _rules(row))

    def history(self, kind: str, limit: int = 50, before: int | None = None) -> list[VersionRow]:
        """The versions of ``kind``, newest first (older than ``before`` when paging)."""
        query = select(DocumentVersion).where(DocumentVersion.kind == _kind(kind))
        if before is not None:
            query = query.where(DocumentVersion.version < before)
        with Session(self.engine) as session:
            return [
                _row(v)
                for v in session.scalars(
                    query.order_by(DocumentVersion.version.desc()).limit(limit)
                )
            ]

    def catalogue_diff(self, old: int | None = None, new: int | None = None) -> CatalogueDiff:
        """What changed from catalogue ``old`` to ``new`` (default: the newest, and the
        version before ``new``)."""
        with Session(self.engine) as session:
            after = self._version(session, CATALOGUE, new)
            before = (
                _previous(session, CATALOGUE, after.version)
                if old is None
                else _load(session, CATALOGUE, old)
            )
            return diff_catalogues(
                _catalogue(before) if before is not None else None, _catalogue(after)
            )

    def rules_diff(self, old: int | None = None, new: int | None = None) -> RulesDiff:
        """What changed from rules ``old`` to ``new`` (defaults as :meth:`catalogue_diff`)."""
        with Session(self.engine) as session:
            after = self._version(session, RULES, new)
            before = (
                _previous(session, RULES, after.version)
                if old is None
                else _load(session, RULES, old)
            )
            return diff_rules(_rules(before) if before is not None else None, _rules(after))

    def picture(self, sha256: str) -> bytes | None:
        """A gift picture's file as HQ keeps it (for the page to show), or None."""
        with Session(self.engine) as session:
            row = session.get(GiftPicture, sha256.lower())
            return bytes(row.data) if row is not None else None

    @staticmethod
    def _version(session: Session, kind: str, version: int | None) -> DocumentVersion:
        if version is not None:
            return _load(session, kind, version)
        row = _newest(session, kind)
        if row is None:
            raise NotFound(f"HQ has no {kind} yet", code=f"no_{kind}")
        return row

    # ------------------------------------------------------------------ editing the catalogue

    def set_gift(
        self,
        actor: Actor,
        sku: str,
        changes: Mapping[str, Any],
        *,
        picture: PictureFile | None = None,
        drop_picture: bool = False,
        based_on: int | None = None,
        note: str = "",
    ) -> Recorded:
        """Adds gift ``sku`` (``changes`` must then name at least its ``name`` and
        ``points_price``) or changes the fields of it that ``changes`` names (any of
        :data:`GIFT_FIELDS`; ``per_member_limit`` None for no limit), with ``picture`` as its
        new picture or none with ``drop_picture``: a new catalogue version.

        Raises:
            InvalidInput: a bad SKU, an unknown field, a value the catalogue refuses.
            Refusal: ``changed_meanwhile`` (``based_on`` is not the newest), ``no_change``.
        """
        ident = validate_sku(sku)
        unknown = sorted(set(changes) - GIFT_FIELDS)
        if unknown:
            raise InvalidInput(
                f"a gift has no field {unknown[0]!r} (it has {', '.join(sorted(GIFT_FIELDS))})",
                code="bad_field",
            )
        if picture is not None and drop_picture:
            raise InvalidInput("a new picture or none, not both", code="bad_picture")

        def build(previous: Catalogue | None, floor: int, now: datetime) -> _Built:
            gifts = [g.model_dump(mode="json", exclude=_UNSIGNED) for g in _gifts(previous)]
            gift = next((g for g in gifts if g["sku"] == ident), None)
            if gift is None:
                missing = [k for k in ("name", "points_price") if k not in changes]
                if missing:
                    raise InvalidInput(
                        f"gift {ident} is new: give its {' and '.join(missing)}",
                        code="gift_incomplete",
                    )
                gift = {"sku": ident}
                gifts.append(gift)
            gift.update(changes)
            if picture is not None:
                gift["picture"] = {"sha256": picture.sha256, "size": len(picture.data)}
            elif drop_picture:
                gift.pop("picture", None)
            try:
                decode(CatalogueGift, _json(gift))
            except ProtocolError as exc:
                raise InvalidInput(f"gift {ident}: {str(exc).partition(': ')[2]}") from None
            document = _validated(Catalogue, {"version": floor, "issued_at": now, "gifts": gifts})
            return _Built(document, (picture,) if picture is not None else ())

        return self._record(CATALOGUE, actor, based_on, note, build)

    def retire_gift(
        self, actor: Actor, sku: str, *, based_on: int | None = None, note: str = ""
    ) -> Recorded:
        """Takes gift ``sku`` off the kiosks' screens (it stays in the catalogue, inactive,
        and :meth:`set_gift` with ``active`` brings it back): a new catalogue version.

        Raises:
            NotFound: ``unknown_gift``: the newest catalogue has no such gift.
            Refusal: ``no_change`` (it is retired already), ``changed_meanwhile``.
        """
        ident = validate_sku(sku)

        def build(previous: Catalogue | None, floor: int, now: datetime) -> _Built:
            gifts = [g.model_dump(mode="json", exclude=_UNSIGNED) for g in _gifts(previous)]
            gift = next((g for g in gifts if g["sku"] == ident), None)
            if gift is None:
                raise NotFound(f"the catalogue has no gift {ident}", code="unknown_gift")
            if not gift["active"]:
                raise Refusal(f"gift {ident} is retired already", code="no_change")
            gift["active"] = False
            return _Built(
                _validated(Catalogue, {"version": floor, "issued_at": now, "gifts": gifts})
            )

        return self._record(CATALOGUE, actor, based_on, note, build)

    def replace_catalogue(
        self,
        actor: Actor,
        document: Mapping[str, Any],
        *,
        pictures: Mapping[str, PictureFile] | None = None,
        based_on: int | None = None,
        note: str = "",
    ) -> Recorded:
        """The whole catalogue from ``document`` (the JSON object of a ``Catalogue``:
        ``gifts``, and ``version`` only to number it above HQ's next), each gift named in
        ``pictures`` ({sku: picture}) with that picture; a gift may also name a picture
        HQ holds already (``picture: {sha256, size}``). A gift left out is no longer sold.

        Raises:
            InvalidInput: the document does not make a catalogue (one line saying where),
                names a SKU twice, or a picture HQ does not hold.
            Refusal: ``changed_meanwhile``, ``no_change``.
        """
        given = dict(pictures or {})
        raw = {k: v for k, v in document.items() if k not in ("key_id", "signature")}
        gifts = raw.get("gifts")
        listed = (
            {g.get("sku") for g in gifts if isinstance(g, dict)}
            if isinstance(gifts, list)
            else set()
        )
        for sku in given:
            if sku not in listed:
                raise InvalidInput(f"a picture for {sku}, which the catalogue does not list")
        if isinstance(gifts, list):
            raw["gifts"] = [
                g
                | {"picture": {"sha256": given[g["sku"]].sha256, "size": len(given[g["sku"]].data)}}
                if isinstance(g, dict) and g.get("sku") in given
                else g
                for g in gifts
            ]
        requested = raw.pop("version", None)

        def build(previous: Catalogue | None, floor: int, now: datetime) -> _Built:
            number = floor if requested is None else requested
            catalogue = _validated(Catalogue, raw | {"version": number, "issued_at": now})
            _number(requested, floor, CATALOGUE)
            skus = [g.sku for g in catalogue.gifts]
            twice = sorted({s for s in skus if skus.count(s) > 1})
            if twice:
                raise InvalidInput(f"gift {twice[0]} is listed twice", code="sku_twice")
            return _Built(catalogue, tuple(given.values()))

        return self._record(CATALOGUE, actor, based_on, note, build)

    # ------------------------------------------------------------------ editing the rules

    def replace_rules(
        self,
        actor: Actor,
        document: Mapping[str, Any],
        *,
        based_on: int | None = None,
        note: str = "",
    ) -> Recorded:
        """The whole rules from ``document`` (the JSON object of a ``Rules``: ``points``,
        ``offline``, optional ``effective_from``, ``member_days`` and ``tiers``; ``version``
        only to number it above HQ's next).

        Raises:
            InvalidInput: the document does not make rules (one line saying where).
            Refusal: ``changed_meanwhile``, ``no_change``.
        """
        raw = {k: v for k, v in document.items() if k not in ("key_id", "signature")}
        requested = raw.pop("version", None)

        def build(previous: Rules | None, floor: int, now: datetime) -> _Built:
            number = floor if requested is None else requested
            rules = _validated(Rules, raw | {"version": number, "issued_at": now})
            _number(requested, floor, RULES)
            return _Built(rules)

        return self._record(RULES, actor, based_on, note, build)

    def set_rules(
        self,
        actor: Actor,
        changes: Mapping[str, Any],
        *,
        based_on: int | None = None,
        note: str = "",
    ) -> Recorded:
        """Changes the fields of the newest rules that ``changes`` names, by path:
        ``points.<field>``, ``offline.<field>``, ``tiers.<code>.<field>``, or a whole
        ``points``, ``offline``, ``member_days`` or ``tiers`` (None: the devices' own), or
        ``effective_from`` (None: at once). A date in force from already passed is not
        carried over (the new version is in force at once unless it says when).

        Raises:
            NotFound: ``no_rules``: HQ has no rules yet (push a whole document first).
            InvalidInput: an unknown path, a value the rules refuse.
            Refusal: ``changed_meanwhile``, ``no_change``.
        """
        if not changes:
            raise InvalidInput("name a field to change (FIELD=VALUE)", code="bad_field")
        for path in changes:
            _check_rules_path(path)

        def build(previous: Rules | None, floor: int, now: datetime) -> _Built:
            if previous is None:
                raise NotFound(
                    "HQ has no rules yet: push a whole document first (kiosk hq rules push FILE)",
                    code="no_rules",
                )
            doc = previous.model_dump(mode="json", exclude=_UNSIGNED)
            if previous.effective_from is not None and previous.effective_from <= now:
                doc["effective_from"] = None
            for path, value in changes.items():
                _set_rules_path(doc, path, value)
            doc.update(version=floor, issued_at=now)
            return _Built(_validated(Rules, doc))

        return self._record(RULES, actor, based_on, note, build)

    # ------------------------------------------------------------------ recording

    def _record(
        self,
        kind: str,
        actor: Actor,
        based_on: int | None,
        note: str,
        build: Callable[[Any, int, datetime], _Built],
    ) -> Recorded:
        """Builds and records the next version of ``kind`` in one transaction with its
        pictures and its audit row, then publishes it. Without ``based_on`` a lost race to
        make the first counter row runs the edit again on the newest version."""
        text = _note(note)
        tries = 1 if based_on is not None else RACE_RETRIES
        for attempt in range(1, tries + 1):
            try:
                with Session(self.engine) as session, session.begin():
                    number, diff = self._record_in(session, kind, actor, based_on, text, build)
                break
            except IntegrityError:
                if based_on is not None:
                    raise Refusal(
                        f"the {kind} changed meanwhile (someone else saved a version): reload "
                        "it and make your change again",
                        code="changed_meanwhile",
                    ) from None
                if attempt == tries:
                    raise
                time.sleep(0.005 * attempt)
        if self.publisher is None:
            return Recorded(kind, number, diff, False, "no publisher")
        done = self.publish(kind)
        return Recorded(kind, number, diff, done.published and done.version >= number, done.problem)

    def _record_in(
        self,
        session: Session,
        kind: str,
        actor: Actor,
        based_on: int | None,
        note: str,
        build: Callable[[Any, int, datetime], _Built],
    ) -> tuple[int, CatalogueDiff | RulesDiff]:
        last = _lock(session, kind)
        if based_on is not None and based_on != last:
            raise Refusal(
                f"the {kind} changed meanwhile: version {last} is the newest, not {based_on}; "
                "reload it and make your change again",
                code="changed_meanwhile",
            )
        row = _load(session, kind, last) if last else None
        previous = None if row is None else (_catalogue(row) if kind == CATALOGUE else _rules(row))
        floor = last + 1 if last else _highest_reported(session, kind) + 1
        now = self.clock()
        built = build(previous, floor, now)
        document = built.document
        diff: CatalogueDiff | RulesDiff
        if isinstance(document, Catalogue):
            assert previous is None or isinstance(previous, Catalogue)
            diff = diff_catalogues(previous, document)
            self._check_pictures(session, document, built.pictures, actor, now)
        else:
            assert previous is None or isinstance(previous, Rules)
            diff = diff_rules(previous, document)
        if previous is not None and diff.empty:
            raise Refusal(
                f"nothing changed: this is the {kind} of version {last}; nothing recorded "
                f"(`kiosk hq {kind} publish` sends it again)",
                code="no_change",
            )
        session.add(
            DocumentVersion(
                kind=kind,
                version=document.version,
                document=document.model_dump_json(exclude=_UNSIGNED),
                at=now,
                actor=actor.name[:64],
                source=actor.source[:16],
                note=note,
                published_at=None,
            )
        )
        session.execute(
            update(ChainCounter).where(ChainCounter.name == kind).values(value=document.version)
        )
        before, after = diff.flat()
        audit.record(
            session, actor, f"{kind}.version", f"{kind} v{document.version}", now,
            before=before, after=after | ({"note": note} if note else {}),
        )  # fmt: skip
        return document.version, diff

    @staticmethod
    def _check_pictures(
        session: Session,
        catalogue: Catalogue,
        given: tuple[PictureFile, ...],
        actor: Actor,
        now: datetime,
    ) -> None:
        """Keeps the given pictures HQ does not hold yet; refuses a gift naming a picture
        HQ holds nowhere."""
        files = {p.sha256: p for p in given}
        for p in files.values():
            if session.get(GiftPicture, p.sha256) is None:
                session.add(
                    GiftPicture(
                        sha256=p.sha256,
                        data=p.data,
                        size=len(p.data),
                        width=p.checked.width,
                        height=p.checked.height,
                        added_at=now,
                        added_by=actor.name[:64],
                    )
                )
        session.flush()
        for gift in catalogue.gifts:
            ref = gift.picture
            if ref is None:
                continue
            held = session.get(GiftPicture, ref.sha256)
            if held is None or held.size != ref.size:
                raise InvalidInput(
                    f"gift {gift.sku} names picture {ref.sha256[:12]}, which HQ does not hold "
                    "(give the picture file)",
                    code="unknown_picture",
                )

    # ------------------------------------------------------------------ publishing

    def publish(
        self, kind: str, actor: Actor | None = None, *, all_pictures: bool = False
    ) -> Publication:
        """Publishes the newest version of ``kind``, signed and retained, and marks it
        published; with a catalogue, the pictures it names that the last version published
        did not (every one with ``all_pictures``). A version recorded meanwhile goes out
        after it, so the broker retains the newest whatever the order of two publishers.
        ``actor``: who asked for it, for the audit log (None: it follows an edit, or the
        service publishes what an edit could not).

        Raises:
            ConfigError: no publisher.
        """
        if self.publisher is None:
            raise ConfigError("nothing to publish with", code="no_publisher")
        _kind(kind)
        sent = 0
        while True:
            with Session(self.engine) as session:
                row = _newest(session, kind)
                if row is None:
                    return Publication(kind, 0, 0, False, f"HQ has no {kind} yet")
                version = row.version
                pictures: dict[str, bytes] = {}
                document: Catalogue | Rules
                if kind == CATALOGUE:
                    document = _catalogue(row)
                    pictures = self._pictures_to_send(session, document, all_pictures)
                else:
                    document = _rules(row)
            try:
                if isinstance(document, Catalogue):
                    self.publisher.catalogue(document, pictures)
                else:
                    self.publisher.rules(document)
            except (ConnectionError, OSError, TimeoutError) as exc:
                return Publication(kind, version, 0, False, str(exc) or type(exc).__name__)
            sent += len(pictures)
            now = self.clock()
            with Session(self.engine) as session, session.begin():
                session.execute(
                    update(DocumentVersion)
                    .where(
                        DocumentVersion.kind == kind,
                        DocumentVersion.version == version,
                        DocumentVersion.published_at.is_(None),
                    )
                    .values(published_at=now)
                )
                if actor is not None:
                    audit.record(
                        session, actor, f"{kind}.publish", f"{kind} v{version}", now,
                        after={"pictures": len(pictures)},
                    )  # fmt: skip
                newest = session.scalar(
                    select(func.max(DocumentVersion.version)).where(DocumentVersion.kind == kind)
                )
            if newest is None or newest == version:
                return Publication(kind, version, sent, True)

    def publish_pending(self) -> list[Publication]:
        """Publishes the newest version of each kind when the broker has not taken it yet
        (what the HQ service does on start and every minute): one query each when there is
        nothing to do."""
        done = []
        for kind in KINDS:
            with Session(self.engine) as session:
                row = _newest(session, kind)
                waiting = row is not None and row.published_at is None
            if waiting:
                done.append(self.publish(kind))
        return done

    @staticmethod
    def _pictures_to_send(session: Session, catalogue: Catalogue, every: bool) -> dict[str, bytes]:
        named = {g.picture.sha256 for g in catalogue.gifts if g.picture is not None}
        if not every:
            last = session.scalars(
                select(DocumentVersion)
                .where(
                    DocumentVersion.kind == CATALOGUE,
                    DocumentVersion.version < catalogue.version,
                    DocumentVersion.published_at.is_not(None),
                )
                .order_by(DocumentVersion.version.desc())
                .limit(1)
            ).first()
            if last is not None:
                named -= {g.picture.sha256 for g in _catalogue(last).gifts if g.picture is not None}
        if not named:
            return {}
        return {
            p.sha256: bytes(p.data)
            for p in session.scalars(select(GiftPicture).where(GiftPicture.sha256.in_(named)))
        }


def _gifts(catalogue: Catalogue | None) -> list[CatalogueGift]:
    return list(catalogue.gifts) if catalogue is not None else []


def _check_rules_path(path: str) -> None:
    parts = path.split(".")
    ok = (
        (len(parts) == 1 and parts[0] in RULES_TOP)
        or (len(parts) == 2 and parts[1] in RULES_SECTIONS.get(parts[0], ()))
        or (len(parts) == 3 and parts[0] == "tiers" and parts[2] in TIER_FIELDS)
    )
    if not ok:
        raise InvalidInput(
            f"no rules field {path!r}: use {', '.join(RULES_TOP)}, points.<field>, "
            "offline.<field> or tiers.<code>.<field>",
            code="bad_field",
        )


def _set_rules_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if len(parts) == 1:
        doc[parts[0]] = value
        return
    if len(parts) == 2:
        section = doc[parts[0]]
        if not isinstance(section, dict):
            raise InvalidInput(f"{parts[0]} is not a section any more: set {path} on its own")
        section[parts[1]] = value
        return
    tiers = doc["tiers"] if isinstance(doc["tiers"], list) else []
    tier = next((t for t in tiers if isinstance(t, dict) and t.get("code") == parts[1]), None)
    if tier is None:
        raise InvalidInput(f"the rules have no tier {parts[1]!r}", code="unknown_tier")
    tier[parts[2]] = value


# ---------------------------------------------------------------------- applied versions


@dataclass(frozen=True)
class DeviceVersions:
    """The catalogue and rules versions one kiosk last reported in force (0: none of
    HQ's: no catalogue yet, or its own rules; a kiosk from before the catalogue version
    was reported says 0 too)."""

    store_id: str
    device_id: str
    state: str
    last_seen: datetime | None
    catalogue_version: int
    rules_version: int


@dataclass(frozen=True)
class VersionCount:
    """How many stores, and kiosks, have ``version`` in force."""

    version: int
    stores: int
    devices: int


@dataclass(frozen=True)
class AppliedVersions:
    """Which kiosks applied which version: each kiosk, and per version of each kind
    (newest first) the stores and kiosks that have it in force."""

    newest_catalogue: int  # HQ's newest version (0: none)
    newest_rules: int
    devices: list[DeviceVersions]
    catalogue: list[VersionCount]
    rules: list[VersionCount]

    def behind(self, kind: str) -> list[DeviceVersions]:
        """The kiosks without HQ's newest version of ``kind`` in force."""
        if _kind(kind) == CATALOGUE:
            return [d for d in self.devices if d.catalogue_version != self.newest_catalogue]
        return [d for d in self.devices if d.rules_version != self.newest_rules]


def _counts(pairs: list[tuple[int, str]]) -> list[VersionCount]:
    stores: dict[int, set[str]] = {}
    devices: dict[int, int] = {}
    for version, store in pairs:
        stores.setdefault(version, set()).add(store)
        devices[version] = devices.get(version, 0) + 1
    return [VersionCount(v, len(stores[v]), devices[v]) for v in sorted(stores, reverse=True)]


def applied_versions(session: Session) -> AppliedVersions:
    """Each kiosk's catalogue and rules versions from its last telemetry (``hq_device``),
    by store and device, and how many stores and kiosks have each version in force."""
    devices = []
    for d in session.scalars(
        select(FleetDevice)
        .where(FleetDevice.role == "kiosk")
        .order_by(FleetDevice.store_id, FleetDevice.device_id)
    ):
        try:
            telemetry = json.loads(d.telemetry or "{}")
        except ValueError:
            telemetry = {}
        versions = [telemetry.get(k, 0) for k in ("catalogue_version", "rules_version")]
        catalogue_v, rules_v = (v if isinstance(v, int) and v >= 0 else 0 for v in versions)
        devices.append(
            DeviceVersions(d.store_id, d.device_id, d.state, d.last_seen, catalogue_v, rules_v)
        )
    newest = {
        kind: session.scalar(
            select(func.max(DocumentVersion.version)).where(DocumentVersion.kind == kind)
        )
        or 0
        for kind in KINDS
    }
    return AppliedVersions(
        newest[CATALOGUE],
        newest[RULES],
        devices,
        _counts([(d.catalogue_version, d.store_id) for d in devices]),
        _counts([(d.rules_version, d.store_id) for d in devices]),
    )
