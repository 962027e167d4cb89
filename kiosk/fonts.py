"""One font for the whole screen: the Simplified Chinese face of Noto Sans CJK.

Kivy's SDL2 text provider opens face 0 of a font file, and face 0 of Debian's
``NotoSansCJK-Regular.ttc`` is the Japanese one: shared code points such as 骨, 直 and 说
would be drawn with Japanese glyph shapes. Kivy has no fallback either, so one font must cover
Latin and Hanzi. At first start the SC face is copied out of the collection into a standalone
OpenType file in the cache (a collection shares its tables between faces; one face is its
table directory plus the tables it names), and registered as Kivy's default font.
"""

from __future__ import annotations

import struct
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


def _checksum(block: bytes) -> int:
    padded = block + b"\0" * (-len(block) % 4)
    return int(sum(struct.unpack(f">{len(padded) // 4}I", padded))) & 0xFFFFFFFF


def extract_face(data: bytes, offset: int) -> bytes:
    """A standalone OpenType font of the collection face at ``offset``."""
    flavor = data[offset : offset + 4]
    tables = _tables(data, offset)
    tags = sorted(tables)
    count = len(tags)
    entry_selector = count.bit_length() - 1
    search_range = (1 << entry_selector) * 16
    head = struct.pack(
        ">4sHHHH", flavor, count, search_range, entry_selector, count * 16 - search_range
    )
    directory = bytearray()
    body = bytearray()
    position = 12 + 16 * count
    head_at = -1
    for tag in tags:
        checksum, start, length = tables[tag]
        chunk = bytearray(data[start : start + length])
        if tag == b"head":
            chunk[8:12] = b"\0\0\0\0"  # checkSumAdjustment, recomputed below
            head_at = position + 8
        directory += struct.pack(">4sIII", tag, checksum, position, length)
        body += chunk + b"\0" * (-length % 4)
        position += length + (-length % 4)
    font = bytearray(head + directory + body)
    if head_at >= 0:
        struct.pack_into(">I", font, head_at, (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF)
    return bytes(font)


def _collection(kind: str) -> Path | None:
    for folder in NOTO_DIRS:
        path = folder / COLLECTIONS[kind]
        if path.is_file():
            return path
    return None


def _standalone(kind: str) -> Path | None:
    for folder in NOTO_DIRS:
        path = folder / STANDALONE[kind]
        if path.is_file():
            return path
    return None


def ensure_fonts(cache_dir: Path) -> KioskFonts:
    """The SC font files, extracted into ``cache_dir`` on first use (a few hundred ms once)."""
    found: dict[str, Path] = {}
    for kind in ("regular", "bold"):
        ready = _standalone(kind)
        if ready is not None:
            found[kind] = ready
            continue
        source = _collection(kind)
        if source is None:
            continue
        target = cache_dir / f"{source.stem}-SC.otf"
        if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
            data = source.read_bytes()
            face = extract_face(data, find_face(data, WANTED_FAMILY))
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(face)
            partial.replace(target)
        found[kind] = target
    if "regular" not in found:
        raise FontError("no Noto Sans CJK font found; install the fonts-noto-cjk package")
    return KioskFonts(found["regular"], found.get("bold", found["regular"]))
