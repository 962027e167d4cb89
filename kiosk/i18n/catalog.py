"""Gettext catalogues: ``.po`` sources compiled to ``.mo`` (GNU format) for ``gettext``.

The sources are the truth and live in the package; the compiled files go to a cache
directory at start-up (only when the source is newer), so the appliance needs no
``msgfmt`` and a read-only installation still works.
"""

from __future__ import annotations

import gettext
import struct
from pathlib import Path

from edge.po import parse_po

DOMAIN = "kiosk"
SOURCE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("zh_CN", "en")


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
