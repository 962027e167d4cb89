"""One font for the whole screen: the Simplified Chinese face of Noto Sans CJK, cut down.

Kivy's SDL2 text provider opens face 0 of a font file, and face 0 of Debian's
``NotoSansCJK-Regular.ttc`` is the Japanese one: shared code points such as 骨, 直 and 说
would be drawn with Japanese glyph shapes. Kivy has no fallback either, so one font must cover
Latin and Hanzi.

FreeType, under SDL2_ttf, keeps its own copy of a CFF font's glyph programs for every size
opened (the SC face: 16 MB, 65,000 glyphs), and Kivy opens one per text size and weight. So
at first start the SC face is subset with fontTools to the characters the screen can ever
show (:func:`screen_charset`: about 7,500), a 2 MB file, cached under a name made of the
source font's SHA-256 and the character set's, and registered as Kivy's default font.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NOTO_DIRS = (
    Path("/usr/share/fonts/opentype/noto"),
    Path("/usr/share/fonts/noto-cjk"),
    Path("/usr/share/fonts/google-noto-cjk"),
)
COLLECTIONS = {"regular": "NotoSansCJK-Regular.ttc", "bold": "NotoSansCJK-Bold.ttc"}
STANDALONE = {"regular": "NotoSansSC-Regular.otf", "bold": "NotoSansSC-Bold.otf"}
WANTED_FAMILY = "Noto Sans CJK SC"
# Bump when the rule in screen_charset or the subset options change (the character set is
# hashed into the file name too).
CHARSET_VERSION = 2
PACKAGE_DIR = Path(__file__).resolve().parent
# Text the screen shows that is not data: catalogues, kv rules, Python (the surname grid).
TEXT_SOURCES = ("*.po", "*.kv", "*.py")
# Tables a horizontal, unshaped CJK label never reads (GSUB alone is 1 MB in the SC face).
DROPPED_TABLES = ("GSUB", "GPOS", "GDEF", "BASE", "JSTF", "VORG", "vhea", "vmtx", "DSIG")

log = logging.getLogger(__name__)


class FontError(Exception):
    """No usable Chinese font was found (install fonts-noto-cjk)."""


@dataclass(frozen=True)
class KioskFonts:
    regular: Path
    bold: Path


def _u16(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">H", data, at)[0])


def _u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">I", data, at)[0])


def _tables(data: bytes, offset: int) -> dict[bytes, tuple[int, int, int]]:
    """Tag -> (checksum, offset, length) of the face whose table directory is at ``offset``."""
    count = _u16(data, offset + 4)
    tables = {}
    for i in range(count):
        rec = offset + 12 + 16 * i
        tag = data[rec : rec + 4]
        tables[tag] = (_u32(data, rec + 4), _u32(data, rec + 8), _u32(data, rec + 12))
    return tables


def _family_names(data: bytes, name_table: tuple[int, int, int]) -> set[str]:
    """Family names (name ids 1 and 16) in the ``name`` table, Windows Unicode records."""
    _, start, _ = name_table
    count, strings = _u16(data, start + 2), start + _u16(data, start + 4)
    names = set()
    for i in range(count):
        rec = start + 6 + 12 * i
        platform, _enc, _lang, name_id, length, off = struct.unpack_from(">HHHHHH", data, rec)
        if platform == 3 and name_id in (1, 16):
            raw = data[strings + off : strings + off + length]
            names.add(raw.decode("utf-16-be", "replace"))
    return names


def face_offsets(data: bytes) -> list[int]:
    if data[:4] != b"ttcf":
        raise FontError("not a font collection")
    count = _u32(data, 8)
    return [_u32(data, 12 + 4 * i) for i in range(count)]


def find_face(data: bytes, family: str) -> int:
    """The table-directory offset of the face whose family is ``family``."""
    for offset in face_offsets(data):
        tables = _tables(data, offset)
        if b"name" in tables and family in _family_names(data, tables[b"name"]):
            return offset
    raise FontError(f"no face named {family!r} in the collection")


def gb2312() -> str:
    """Every character of GB 2312: its 6,763 Hanzi (levels 1 and 2) and its symbol rows.

    Gift names come from HQ's catalogue and are free text; level 1 alone (3,755 Hanzi)
    misses everyday product words (橄榄油, 粽子, 枸杞, 电饭煲, 沐浴露), the full set covers
    them. Member names need nothing more: they are a surname from the grid plus 先生/女士.
    """
    chars = []
    for row in range(0xA1, 0xF8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes((row, cell)).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


def screen_charset(extra: Iterable[str] = ()) -> str:
    """The characters the touchscreen can ever show, sorted, as one string.

    Printable ASCII and Latin-1 (¥, ·, ×), general punctuation (“ ” — …), full-width forms,
    GB 2312, every character of the app's catalogues, kv rules and Python sources (the
    surname grid), and ``extra`` (the privacy terms, which live in the core).
    """
    chars = {chr(c) for c in range(0x20, 0x7F)}
    chars.update(chr(c) for c in range(0xA0, 0x100))
    chars.update(chr(c) for c in range(0x2010, 0x2040))
    chars.update(chr(c) for c in range(0xFF01, 0xFF5F))
    chars.update(chr(c) for c in range(0xFFE0, 0xFFE7))
    chars.update(gb2312())
    for pattern in TEXT_SOURCES:
        for path in sorted(PACKAGE_DIR.rglob(pattern)):
            chars.update(path.read_text(encoding="utf-8"))
    for text in extra:
        chars.update(text)
    # no control, format or private-use code points: they have no glyph to keep
    return "".join(sorted(c for c in chars if unicodedata.category(c)[0] != "C"))


def _charset_key(charset: str) -> str:
    return hashlib.sha256(f"{CHARSET_VERSION}\n{charset}".encode()).hexdigest()[:12]


def source_digest(path: Path, cache_dir: Path) -> str:
    """SHA-256 of a font file, remembered in ``cache_dir`` under the file's size and mtime.

    Hashing 20 MB takes a Pi 4 (no crypto extensions) over 100 ms; a start-up only stats.
    """
    manifest = cache_dir / "sources.json"
    try:
        known = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    entry = known.get(str(path))
    if isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("sha256"):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    known[str(path)] = {"stamp": stamp, "sha256": digest.hexdigest()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(manifest, json.dumps(known, indent=1).encode())
    return digest.hexdigest()


def _write_atomically(target: Path, data: bytes) -> None:
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)


def subset_face(source: Path, charset: str) -> bytes:
    """The SC face of ``source`` (a collection or a standalone font) cut to ``charset``."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    data = source.read_bytes()
    index = face_offsets(data).index(find_face(data, WANTED_FAMILY)) if data[:4] == b"ttcf" else -1
    # no bounding-box recalculation: it draws every glyph and would double the time
    font = TTFont(
        io.BytesIO(data), fontNumber=index, lazy=True, recalcBBoxes=False, recalcTimestamp=False
    )
    options = subset.Options()
    options.layout_features = []
    options.drop_tables += list(DROPPED_TABLES)
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    # FreeType copies a CFF font's subroutines into memory for every size opened (Kivy opens
    # one per text size and weight, twenty or more): glyphs without subroutines are read
    # from the file as they are drawn
    options.desubroutinize = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in charset])
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    font.close()
    return out.getvalue()


def _source(kind: str) -> Path | None:
    """The installed SC face of weight ``kind``: a standalone file, or Debian's collection."""
    for names in (STANDALONE, COLLECTIONS):
        for folder in NOTO_DIRS:
            path = folder / names[kind]
            if path.is_file():
                return path
    return None


def ensure_fonts(cache_dir: Path, extra_text: Iterable[str] = ()) -> KioskFonts:
    """The screen's fonts, subset into ``cache_dir`` on first use (seconds, once).

    A new font package or a changed character set (new catalogue text) makes a new file;
    the files of earlier ones are removed.
    """
    charset = screen_charset(extra_text)
    charset_key = _charset_key(charset)
    found: dict[str, Path] = {}
    for kind in ("regular", "bold"):
        source = _source(kind)
        if source is None:
            continue
        stem = f"{source.stem}-SC"
        target = cache_dir / f"{stem}-{source_digest(source, cache_dir)[:12]}-{charset_key}.otf"
        if not target.is_file():
            log.info("cutting %s down to %d characters for the screen", source, len(charset))
            _write_atomically(target, subset_face(source, charset))
        for stale in cache_dir.glob(f"{stem}*.otf"):
            if stale != target:
                stale.unlink(missing_ok=True)
        found[kind] = target
    if "regular" not in found:
        raise FontError("no Noto Sans CJK font found; install the fonts-noto-cjk package")
    return KioskFonts(found["regular"], found.get("bold", found["regular"]))
