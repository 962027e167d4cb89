"""One translation mechanism, complete catalogues, and the Simplified Chinese face."""

from __future__ import annotations

import gettext
import io
import json
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageDraw, ImageFont

from edge.po import parse_po
from kiosk.fonts import ensure_fonts, face_offsets, find_face, screen_charset, source_digest
from kiosk.i18n.catalog import LANGUAGES, compile_mo, load_catalog, source
from kiosk.i18n.extract import msgids
from kiosk.viewmodels.register import SURNAMES, TITLES

TTC = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_on_screen_is_in_each_catalogue(language):
    entries = parse_po(source(language).read_text(encoding="utf-8"))
    missing = sorted(m for m in msgids() if not entries.get(m))
    assert not missing, f"{language} lacks translations for {missing}"


def test_placeholders_survive_translation():
    zh = parse_po(source("zh_CN").read_text(encoding="utf-8"))
    import string

    for msgid, msgstr in zh.items():
        if not msgid:
            continue
        names = {f for _, f, _, _ in string.Formatter().parse(msgid) if f}
        assert names == {f for _, f, _, _ in string.Formatter().parse(msgstr) if f}, msgid


def test_compiled_catalogue_reads_back_with_gettext(tmp_path):
    mo = compile_mo({"": "Content-Type: text/plain; charset=UTF-8\n", "Help": "求助"})
    assert gettext.GNUTranslations(io.BytesIO(mo)).gettext("Help") == "求助"
    assert load_catalog("zh_CN", tmp_path).gettext("Help") == "求助"
    assert load_catalog("en", tmp_path).gettext("Help") == "Help"


needs_noto = pytest.mark.skipif(not TTC.exists(), reason="fonts-noto-cjk not installed")


@pytest.fixture(scope="module")
def screen_fonts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fonts")
    return cache, ensure_fonts(cache, extra_text=["隐私条款"])


def _draw(font, text="骨"):
    image = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(image).text((8, 0), text, font=font, fill=255)
    return image


def test_the_screen_charset_holds_every_catalogue_text_and_the_surname_grid():
    charset = set(screen_charset())
    for language in LANGUAGES:
        for msgid, msgstr in parse_po(source(language).read_text(encoding="utf-8")).items():
            assert set(msgid + msgstr) - {"\n"} <= charset, msgid
    assert set("".join(SURNAMES) + "".join(TITLES)) <= charset
    assert set("橄榄油粽子枸杞电饭煲沐浴露") <= charset  # GB 2312 level 2: gift names
    assert set("0123456789ABCxyz¥￥，。：（）“”—") <= charset
    assert "\n" not in charset and "\x00" not in charset
    assert "㐀" not in charset and "㐀" in screen_charset(["㐀"])


@needs_noto
def test_the_subset_face_is_simplified_chinese_small_and_complete(screen_fonts):
    _cache, fonts = screen_fonts
    for path in (fonts.regular, fonts.bold):
        assert path.stat().st_size < 3_000_000  # the whole SC face is 16 MB
        font = TTFont(path)
        assert font["name"].getDebugName(1) == "Noto Sans CJK SC"
        cmap = font.getBestCmap()
        assert len(font.getGlyphOrder()) < 10_000
        wanted = screen_charset(["隐私条款"])
        covered = sum(ord(c) in cmap for c in wanted)
        assert covered / len(wanted) > 0.99  # a few GB 2312 symbols are not in Noto at all
        assert all(ord(c) in cmap for c in "会员中心积分隐私条款王先生女士0123456789¥")
        # no subroutines: FreeType would copy them into memory once per text size opened
        cff = font["CFF "].cff
        assert len(cff.GlobalSubrs) == 0
        top = cff.topDictIndex[0]
        private_dicts = (
            [fd.Private for fd in top.FDArray] if hasattr(top, "FDArray") else [top.Private]
        )
        assert not any(getattr(private, "Subrs", None) for private in private_dicts)
    sc = ImageFont.truetype(str(fonts.regular), 64)
    japanese = ImageFont.truetype(str(TTC), 64, index=0)
    assert japanese.getname()[0] == "Noto Sans CJK JP"
    # 骨 is drawn differently in mainland China and Japan
    assert ImageChops.difference(_draw(sc), _draw(japanese)).getbbox() is not None
    data = TTC.read_bytes()
    index = face_offsets(data).index(find_face(data, "Noto Sans CJK SC"))
    assert index != 0  # face 0 is the Japanese one
    whole = ImageFont.truetype(str(TTC), 64, index=index)
    for text in ("骨", "积", "A"):
        assert ImageChops.difference(_draw(sc, text), _draw(whole, text)).getbbox() is None


@needs_noto
def test_the_subset_is_cached_by_font_and_charset_and_replaced_when_either_changes(
    screen_fonts,
):
    cache, fonts = screen_fonts
    made = {p: p.stat().st_mtime_ns for p in (fonts.regular, fonts.bold)}
    source_hash = source_digest(TTC, cache)
    assert source_hash[:12] in fonts.regular.name
    again = ensure_fonts(cache, extra_text=["隐私条款"])
    assert again == fonts
    assert {p: p.stat().st_mtime_ns for p in (again.regular, again.bold)} == made
    # the hash is remembered under the file's size and mtime: a changed stamp rehashes
    manifest = json.loads((cache / "sources.json").read_text())
    manifest[str(TTC)]["sha256"] = "0" * 64
    (cache / "sources.json").write_text(json.dumps(manifest))
    assert source_digest(TTC, cache) == "0" * 64
    manifest[str(TTC)]["stamp"] = [1, 1]
    (cache / "sources.json").write_text(json.dumps(manifest))
    assert source_digest(TTC, cache) == source_hash
    wider = ensure_fonts(cache, extra_text=["隐私条款㐀"])  # a character outside GB 2312
    assert wider.regular != fonts.regular
    assert ord("㐀") in TTFont(wider.regular).getBestCmap()
    assert not fonts.regular.exists() and not fonts.bold.exists()  # the old ones are gone
    assert sorted(p.name for p in cache.glob("*.otf")) == sorted(
        [wider.regular.name, wider.bold.name]
    )
