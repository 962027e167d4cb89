"""The console's languages: Chinese first, English on a switch (the ``lang`` cookie).

Texts are written in English in the templates and code (``_("Fleet")``) and translated from
``locale/zh_CN.po``. A text with no translation shows in English, and a test keeps every
text of the console translated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from edge.po import parse_po

LANGUAGES = ("zh", "en")
DEFAULT = "zh"
CATALOGUE = Path(__file__).parent / "locale" / "zh_CN.po"

Translate = Callable[[str], str]


# Words the pages translate from data (states, roles, alert kinds), not from literals.
DYNAMIC = (
    "online",
    "offline",
    "unknown",
    "ok",
    "degraded",
    "failed",
    "kiosk",
    "lane",
    "open",
    "acknowledged",
    "cleared",
    "active",
    "revoked",
    "retired",
    "never seen",
    "viewer",
    "operator",
    "member_desk",
    "supervisor",
    "admin",
    "out",
    "low",
    "device_offline",
    "card_clone_suspect",
    "disk_low",
    "clock_off",
    "event_not_applied",
    "event_seq_conflict",
    "gift_low_stock",
    "member_unknown",
    "merged_member_points",
    "voucher_collected_twice",
    "coupon_used_twice",
    "overdraft",
    "undervoltage",
    "printer_out_of_paper",
    "door_opened",
    "dispenser_empty",
    "device_jammed",
    "update_failed",
    "enrol",
    "move",
    "replace",
    "purchase",
    "checkin",
    "birthday",
    "referral",
    "redemption",
    "expiry",
    "adjustment",
    "refund",
    "voucher_return",
    "merge_in",
    "merge_out",
    "opening",
    "missed_points",
    "goodwill",
    "correction",
    "overdraft_settled",
    "overdraft_written_off",
    "pending",
    "applied",
    "rejected",
    "lost",
    "blocked",
    # refusals of HQ's services that the console shows as they come
    "no member has this mobile number",
    "type a card number, member id or mobile number",
    "phone search needs the chain's lookup key (hq-lookup.key in HQ's TLS folder)",
    "this member owes no points: nothing to settle",
    "someone else approves what you asked for",
    "say why in a note",
    "say why the card is blocked",
    "points must be a whole number",
    "say what was done about it (a note is needed)",
    "this alert has cleared meanwhile",
    "you cannot change your own role or disable yourself",
    "say why the device is revoked",
    "this member record is erased or merged into another: adjust the one it went into",
    "a note is one line of at most 200 printable characters",
    "running",
    "halted",
    "finished",
    "cancelled",
    "sent",
    "installed",
    "skipped",
    "catalogue",
    "rules",
    "gift",
    "coupon",
    "day",
    "store_id",
    "tier",
    "sku",
    "name",
    "issued",
    "redeemed",
    "expired",
    "refunded",
    "returned",
    "adjusted",
    "merged",
    "other",
    "net",
    "entries",
    "outstanding",
    "redemptions",
    "quantity",
    "points",
    "lapsed",
    "joined",
    "departed",
    "total",
    "checkins",
)


def N_(text: str) -> str:  # noqa: N802 - the gettext name for "translated later"
    """Marks a text for translation where it is defined; translated where it is shown."""
    return text


_TEMPLATE_TEXT = re.compile(r"""\b_\(\s*(?:"([^"]+)"|'([^']+)')\s*\)""")
_CODE_TEXT = re.compile(r"""\b(?:t|N_)\(\s*"([^"]+)"\s*\)""")


def texts() -> set[str]:
    """Every text the console shows: from its templates, its code and :data:`DYNAMIC`."""
    here = Path(__file__).parent
    found: set[str] = set(DYNAMIC)
    for template in (here / "templates").glob("*.html"):
        for a, b in _TEMPLATE_TEXT.findall(template.read_text(encoding="utf-8")):
            found.add(a or b)
    for module in here.glob("*.py"):
        found.update(_CODE_TEXT.findall(module.read_text(encoding="utf-8")))
    return found


@cache
def chinese() -> dict[str, str]:
    return parse_po(CATALOGUE.read_text(encoding="utf-8"))


def translator(lang: str) -> Translate:
    if lang != "zh":
        return lambda text: text
    table = chinese()
    return lambda text: table.get(text) or text


def pick(cookie: str | None, accept: str | None) -> str:
    """The cookie's language, else Chinese unless the browser asks for English first."""
    if cookie in LANGUAGES:
        return str(cookie)
    first = (accept or "").split(",")[0].strip().lower()
    return "en" if first.startswith("en") else DEFAULT


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def update_catalogue(path: Path = CATALOGUE) -> list[str]:
    """Write every text the console shows into ``path``, keeping the translations there;
    returns the texts still untranslated."""
    known = parse_po(path.read_text(encoding="utf-8")) if path.exists() else {}
    lines = [
        "# HQ console: Chinese (simplified).",
        'msgid ""',
        'msgstr ""',
        '"Content-Type: text/plain; charset=UTF-8\\n"',
        "",
    ]
    for text in sorted(texts()):
        lines += [f"msgid {_quote(text)}", f"msgstr {_quote(known.get(text, ''))}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return sorted(t for t in texts() if not known.get(t))


if __name__ == "__main__":
    missing = update_catalogue()
    print(f"{CATALOGUE}: {len(missing)} untranslated")
    for text in missing:
        print(f"  {text}")
