"""Text as a raster image, for printers without a Chinese font, and the CJK font lookup."""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)


@functools.cache
def cjk_font(
    size: int, bold: bool = False, mono: bool = True
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The Simplified Chinese face of Noto Sans (Mono) CJK, found by name.

    The mono face draws ASCII at half the width of a Hanzi, as the printer's own fonts do,
    so that columns line up in previews as they do on paper.

    A ``.ttc`` holds one face per region and face 0 is Japanese, whose glyphs for shared
    code points (骨, 直) differ from mainland ones; so the SC face is looked up by name.
    """
    for path in sorted(FONT_CANDIDATES, key=lambda p: ("Bold" in p.name) != bold):
        if not path.exists():
            continue
        for index in range(16):
            try:
                font = ImageFont.truetype(str(path), size, index=index)
            except OSError:
                break
            family = font.getname()[0] or ""
            if family.endswith(" SC") and ("Mono" in family) == mono:
                return font
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def render_line(text: str, width: int, align: str, bold: bool, big: bool) -> Image.Image:
    """One receipt line as a 1-bit image ``width`` dots wide: 24-dot glyphs (48 when big)
    on the printer's default 30-dot line pitch."""
    height = 60 if big else 30
    font = cjk_font(48 if big else 24, bold)
    image = Image.new("1", (width, height), 1)
    draw = ImageDraw.Draw(image)
    text_width = int(draw.textlength(text, font=font))
    x = {"left": 0, "center": (width - text_width) // 2, "right": width - text_width}[align]
    draw.text((max(0, x), height // 2), text, font=font, fill=0, anchor="lm")
    return image


def raster_bytes(image: Image.Image) -> bytes:
    """``GS v 0`` raster bit image: one bit a dot, 1 = black, rows of ``width/8`` bytes."""
    mono = image.convert("1")
    width_bytes = (mono.width + 7) // 8
    padded = Image.new("1", (width_bytes * 8, mono.height), 1)
    padded.paste(mono, (0, 0))
    data = bytes(b ^ 0xFF for b in padded.tobytes())  # PIL packs white as 1
    return (
        b"\x1dv0\x00"
        + bytes([width_bytes & 0xFF, width_bytes >> 8, mono.height & 0xFF, mono.height >> 8])
        + data
    )


def raster_line(text: str, width: int, align: str, bold: bool, big: bool) -> bytes:
    return raster_bytes(render_line(text, width, align, bold, big))
