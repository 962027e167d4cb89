"""A PNG picture of a receipt as the printer would print it, for people to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from drivers._lazy import require
from drivers.printer.document import Barcode, Cut, Feed, Qr, Receipt, Rule, Step, Text
from drivers.printer.profiles import PrinterProfile
from drivers.printer.raster import cjk_font, render_line

MARGIN = 16


def render_preview(receipt: Receipt, profile: PrinterProfile) -> Image.Image:
    """The receipt on a strip of paper ``profile.dots`` wide (one pixel per dot)."""
    blocks = [_block(step, profile) for step in receipt.steps]
    height = sum(b.height for b in blocks) + 2 * MARGIN
    page = Image.new("L", (profile.dots + 2 * MARGIN, height), 255)
    y = MARGIN
    for block in blocks:
        page.paste(block, (MARGIN + (profile.dots - block.width) // 2, y))
        y += block.height
    return page


def _block(step: Step, profile: PrinterProfile) -> Image.Image:
    zxing = require("zxingcpp", "install zxing-cpp")
    match step:
        case Text():
            return render_line(step.text, profile.dots, step.align, step.bold, step.big).convert(
                "L"
            )
        case Rule():
            return render_line(step.char[0] * profile.columns, profile.dots, "left", False, False)
        case Qr():
            symbol = zxing.create_barcode(step.data, zxing.BarcodeFormat.QRCode, ec_level="M")
            return Image.fromarray(np.asarray(symbol.to_image(scale=step.module_dots)))
        case Barcode():
            fmt = zxing.BarcodeFormat.EAN13 if step.kind == "EAN13" else zxing.BarcodeFormat.Code128
            bars = Image.fromarray(
                np.asarray(zxing.create_barcode(step.data, fmt).to_image(scale=2))
            )
            bars = bars.resize((bars.width, 80))
            caption = Image.new("L", (bars.width, 26), 255)
            ImageDraw.Draw(caption).text(
                (bars.width // 2, 0), step.data, font=cjk_font(22), fill=0, anchor="ma"
            )
            both = Image.new("L", (bars.width, 106), 255)
            both.paste(bars, (0, 0))
            both.paste(caption, (0, 80))
            return both
        case Feed():
            return Image.new("L", (profile.dots, 30 * step.lines), 255)
        case Cut():
            cut = Image.new("L", (profile.dots, 24), 255)
            ImageDraw.Draw(cut).line([(0, 12), (profile.dots, 12)], fill=128, width=1)
            ImageDraw.Draw(cut).text((0, 0), "✂", font=cjk_font(20), fill=0)
            return cut
    raise TypeError(f"not a receipt step: {step!r}")
