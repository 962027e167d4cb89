"""What changed between two versions of HQ's gift catalogue or rules, as data (for the
console's page) and as lines of text (for ``kiosk hq catalogue|rules diff``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.protocol import Catalogue, CatalogueGift, Rules

# Fields of a document that say nothing about its content: every version differs in them.
_ENVELOPE = frozenset({"v", "key_id", "signature", "version", "issued_at"})


@dataclass(frozen=True)
class FieldChange:
    """One field, before and after (None: not there on that side)."""

    field: str
    old: Any
    new: Any

    def text(self) -> str:
        return f"{self.field}: {shown(self.old)} -> {shown(self.new)}"


@dataclass(frozen=True)
class GiftChange:
    """A gift in both versions whose fields differ."""

    sku: str
    name: str
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class CatalogueDiff:
    """From catalogue ``old_version`` (0: none) to ``new_version``: gifts added, removed
    (no longer listed, so inactive at the kiosks) and changed, each by SKU."""

    old_version: int
    new_version: int
    added: tuple[CatalogueGift, ...]
    removed: tuple[CatalogueGift, ...]
    changed: tuple[GiftChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def flat(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Before and after of every changed field, by ``SKU.field`` (a whole gift by SKU
        when added or removed): what the audit log keeps."""
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for gift in self.added:
            before[gift.sku], after[gift.sku] = None, gift_fields(gift)
        for gift in self.removed:
            before[gift.sku], after[gift.sku] = gift_fields(gift), None
        for change in self.changed:
            for c in change.changes:
                before[f"{change.sku}.{c.field}"] = c.old
                after[f"{change.sku}.{c.field}"] = c.new
        return before, after

    def lines(self) -> list[str]:
        head = f"catalogue v{self.old_version or '-'} -> v{self.new_version}"
        if self.empty:
            return [f"{head}: no change"]
        out = [head]
        for gift in self.added:
            out.append(f"  + {gift.sku} {gift.name}: {_gift_summary(gift)}")
        for gift in self.removed:
            out.append(f"  - {gift.sku} {gift.name} (no longer listed)")
        for change in self.changed:
            out.append(f"  ~ {change.sku} {change.name}")
            out.extend(f"      {c.text()}" for c in change.changes)
        return out


@dataclass(frozen=True)
class RulesDiff:
    """From rules ``old_version`` (0: none) to ``new_version``: every field that differs,
    by path (``points.points_per_yuan``, ``tiers.gold.threshold``, ``member_days.weekday 2``
    ...)."""

    old_version: int
    new_version: int
    changes: tuple[FieldChange, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def flat(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            {c.field: c.old for c in self.changes},
            {c.field: c.new for c in self.changes},
        )

    def lines(self) -> list[str]:
        head = f"rules v{self.old_version or '-'} -> v{self.new_version}"
        if self.empty:
            return [f"{head}: no change"]
        return [head, *(f"  {c.text()}" for c in self.changes)]


def shown(value: Any) -> str:
    """A field's value as the diff prints it."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def gift_fields(gift: CatalogueGift) -> dict[str, Any]:
    """A gift's fields as the diff compares them (its picture by the start of its SHA-256)."""
    fields = gift.model_dump(mode="json", exclude={"v", "sku"})
    picture = fields.pop("picture", None)
    fields["picture"] = picture["sha256"][:12] if picture else None
    return fields


def _gift_summary(gift: CatalogueGift) -> str:
    parts = [f"{gift.points_price} points", gift.kind]
    if gift.per_member_limit is not None:
        parts.append(f"at most {gift.per_member_limit} a member")
    if not gift.active:
        parts.append("inactive")
    if gift.picture is not None:
        parts.append(f"picture {gift.picture.sha256[:12]}")
    return ", ".join(parts)


def diff_catalogues(old: Catalogue | None, new: Catalogue) -> CatalogueDiff:
    """What changed from ``old`` (None: nothing before) to ``new``."""
    before = {g.sku: g for g in old.gifts} if old is not None else {}
    after = {g.sku: g for g in new.gifts}
    changed = []
    for sku, gift in after.items():
        was = before.get(sku)
        if was is None:
            continue
        old_fields, new_fields = gift_fields(was), gift_fields(gift)
        changes = tuple(
            FieldChange(k, old_fields.get(k), new_fields.get(k))
            for k in new_fields
            if old_fields.get(k) != new_fields.get(k)
        )
        if changes:
            changed.append(GiftChange(sku, gift.name, changes))
    return CatalogueDiff(
        old.version if old is not None else 0,
        new.version,
        tuple(g for sku, g in after.items() if sku not in before),
        tuple(g for sku, g in before.items() if sku not in after),
        tuple(changed),
    )


def rules_fields(rules: Rules) -> dict[str, Any]:
    """The rules flattened to ``path: value``, as the diff compares them: each points and
    offline field, each member day by its day, each tier's fields by its code; a list left to
    the devices' own is one entry saying so."""
    doc = rules.model_dump(mode="json", exclude=set(_ENVELOPE))
    flat: dict[str, Any] = {"effective_from": doc["effective_from"]}
    for section in ("points", "offline"):
        for key, value in doc[section].items():
            if key != "v":
                flat[f"{section}.{key}"] = value
    if doc["member_days"] is None:
        flat["member_days"] = "the device's own"
    else:
        for day in doc["member_days"]:
            when = (
                f"day {day['day_of_month']}"
                if day["day_of_month"] is not None
                else f"weekday {day['weekday']}"
            )
            flat[f"member_days.{when}.multiplier_pct"] = day["multiplier_pct"]
    if doc["tiers"] is None:
        flat["tiers"] = "the device's own"
    else:
        for tier in doc["tiers"]:
            for key, value in tier.items():
                if key != "code":
                    flat[f"tiers.{tier['code']}.{key}"] = value
    return flat


def diff_rules(old: Rules | None, new: Rules) -> RulesDiff:
    """What changed from ``old`` (None: nothing before) to ``new``."""
    before = rules_fields(old) if old is not None else {}
    after = rules_fields(new)
    keys = list(after) + [k for k in before if k not in after]
    return RulesDiff(
        old.version if old is not None else 0,
        new.version,
        tuple(
            FieldChange(k, before.get(k), after.get(k))
            for k in keys
            if before.get(k) != after.get(k)
        ),
    )
