"""One translation mechanism, complete catalogues, and the Simplified Chinese face."""

from __future__ import annotations

import gettext
import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont

from kiosk.fonts import extract_face, face_offsets, find_face
from kiosk.i18n.catalog import LANGUAGES, compile_mo, load_catalog, parse_po, source
from kiosk.i18n.extract import msgids

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


@pytest.mark.skipif(not TTC.exists(), reason="fonts-noto-cjk not installed")
def test_the_extracted_face_is_simplified_chinese_and_draws_mainland_glyphs(tmp_path):
    data = TTC.read_bytes()
    offset = find_face(data, "Noto Sans CJK SC")
    assert offset != face_offsets(data)[0]  # face 0 is the Japanese one
    path = tmp_path / "sc.otf"
    path.write_bytes(extract_face(data, offset))
    sc = ImageFont.truetype(str(path), 64)
    assert sc.getname()[0] == "Noto Sans CJK SC"
    japanese = ImageFont.truetype(str(TTC), 64, index=0)
    assert japanese.getname()[0] == "Noto Sans CJK JP"

    def draw(font):
        image = Image.new("L", (80, 80), 0)
        ImageDraw.Draw(image).text((8, 0), "骨", font=font, fill=255)
        return image

    # 骨 is drawn differently in mainland China and Japan; Latin is the same in both
    assert ImageChops.difference(draw(sc), draw(japanese)).getbbox() is not None
    for index in range(len(face_offsets(data))):
        face = ImageFont.truetype(str(TTC), 64, index=index)
        if face.getname()[0] == "Noto Sans CJK SC":
            assert ImageChops.difference(draw(sc), draw(face)).getbbox() is None
