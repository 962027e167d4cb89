"""Gettext catalogues: ``.po`` sources compiled to ``.mo`` (GNU format) for ``gettext``.

The sources are the truth and live in the package; the compiled files go to a cache
directory at start-up (only when the source is newer), so the appliance needs no
``msgfmt`` and a read-only installation still works.
"""

from __future__ import annotations

import ast
import gettext
import struct
from pathlib import Path

DOMAIN = "kiosk"
SOURCE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("zh_CN", "en")


def parse_po(text: str) -> dict[str, str]:
    """msgid -> msgstr of a ``.po`` file (no plurals or contexts: the kiosk uses neither)."""
    entries: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None

    def flush() -> None:
        if msgid is not None and msgstr is not None:
            entries["".join(msgid)] = "".join(msgstr)

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("msgid "):
            flush()
            msgid, msgstr = [ast.literal_eval(line[6:])], None
            current = msgid
        elif line.startswith("msgstr "):
            msgstr = [ast.literal_eval(line[7:])]
            current = msgstr
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
        else:
            raise ValueError(f"unsupported .po line: {raw!r}")
    flush()
    return entries


def compile_mo(entries: dict[str, str]) -> bytes:
    """The GNU ``.mo`` bytes of ``entries`` (untranslated entries are left out)."""
    pairs = sorted(
        (k.encode("utf-8"), v.encode("utf-8")) for k, v in entries.items() if v or k == ""
    )
    count = len(pairs)
    ids_at = 28
    strs_at = ids_at + 8 * count
    data_at = strs_at + 8 * count
    ids_table, strs_table, blob = [], [], bytearray()
    for key, _ in pairs:
        ids_table.append((len(key), data_at + len(blob)))
        blob += key + b"\0"
    for _, value in pairs:
        strs_table.append((len(value), data_at + len(blob)))
        blob += value + b"\0"
    out = bytearray(struct.pack("<IIIIIII", 0x950412DE, 0, count, ids_at, strs_at, 0, 0))
    for length, offset in ids_table + strs_table:
        out += struct.pack("<II", length, offset)
    return bytes(out + blob)


def source(language: str) -> Path:
    return SOURCE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_catalog(language: str, cache_dir: Path) -> gettext.GNUTranslations:
    """The compiled catalogue of ``language`` (compiled into ``cache_dir`` when stale)."""
    po = source(language)
    mo = cache_dir / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not mo.is_file() or mo.stat().st_mtime < po.stat().st_mtime:
        mo.parent.mkdir(parents=True, exist_ok=True)
        partial = mo.with_suffix(".part")
        partial.write_bytes(compile_mo(parse_po(po.read_text(encoding="utf-8"))))
        partial.replace(mo)
    with mo.open("rb") as f:
        return gettext.GNUTranslations(f)
