"""ZBar through pyzbar's ctypes binding, with QR payloads returned as raw bytes.

``pyzbar.decode`` lets ZBar guess the QR text encoding and convert it, which turns UTF-8
Chinese into mojibake (测试 becomes 皜祈岫). ZBar's ``ZBAR_CFG_BINARY`` switch returns the
bytes untouched so that :func:`decode_qr_bytes` can decode them properly.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from drivers._lazy import require
from drivers.scanner.code import Code, Symbology

# zbar.h: ZBAR_CFG_BINARY follows ZBAR_CFG_ASCII (3); pyzbar's enum predates it.
_CFG_BINARY = 4
_ZBAR_TYPE = {Symbology.QR_CODE: 64, Symbology.CODE_128: 128, Symbology.EAN_13: 13}
_FROM_ZBAR = {v: k for k, v in _ZBAR_TYPE.items()}


def decode_qr_bytes(raw: bytes) -> str:
    """Decodes a QR payload: UTF-8 first (what phones and our own codes use), then the
    Japanese and Chinese legacy encodings that QR codes without an ECI header carry.
    """
    for encoding in ("utf-8", "shift_jis", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


Point = tuple[float, float]
# zbar.h: ZBAR_ORIENT_UP, _RIGHT, _DOWN, _LEFT; the direction a 1-D code is read in
_READ_DIRECTION: dict[int, Point] = {0: (1.0, 0.0), 1: (0.0, 1.0), 2: (-1.0, 0.0), 3: (0.0, -1.0)}


class ZbarSymbol(NamedTuple):
    """A code ZBar read, where it found it, and the direction it reads in (if ZBar knows)."""

    code: Code
    points: tuple[Point, ...]
    direction: Point | None


def zbar_decode(
    gray: npt.NDArray[np.uint8], symbologies: Iterable[Symbology], density: int = 1
) -> list[ZbarSymbol]:
    """Decodes a grayscale image with ZBar restricted to ``symbologies``.

    Returns each code with the points where ZBar located it (the corners of a QR code; the
    ends of the scan lines that crossed a 1-D code), in pixels of ``gray``, and for 1-D
    codes the direction they read in.

    Args:
        gray: 8-bit single-channel image.
        symbologies: the kinds to look for; all others are disabled.
        density: scan every n-th row and column; 3 is three times cheaper and, on camera
            photos of 1-D codes, finds as many.
    """
    pyzbar = require("pyzbar.pyzbar", "install pyzbar and the libzbar0 Debian package")
    w = require("pyzbar.wrapper", "install pyzbar and the libzbar0 Debian package")
    height, width = gray.shape[:2]
    data = np.ascontiguousarray(gray).tobytes()
    found: list[ZbarSymbol] = []
    with pyzbar._image_scanner() as scanner:
        w.zbar_image_scanner_set_config(scanner, 0, w.ZBarConfig.CFG_ENABLE, 0)
        for symbology in symbologies:
            w.zbar_image_scanner_set_config(
                scanner, _ZBAR_TYPE[symbology], w.ZBarConfig.CFG_ENABLE, 1
            )
        w.zbar_image_scanner_set_config(scanner, 64, _CFG_BINARY, 1)
        w.zbar_image_scanner_set_config(scanner, 0, w.ZBarConfig.CFG_X_DENSITY, density)
        w.zbar_image_scanner_set_config(scanner, 0, w.ZBarConfig.CFG_Y_DENSITY, density)
        with pyzbar._image() as image:
            w.zbar_image_set_format(image, pyzbar._FOURCC["L800"])
            w.zbar_image_set_size(image, width, height)
            pixels = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
            w.zbar_image_set_data(image, pixels, len(data), None)
            w.zbar_scan_image(scanner, image)
            for symbol in pyzbar._symbols_for_image(image):
                kind = _FROM_ZBAR.get(int(symbol.contents.type))
                if kind is None:
                    continue
                raw = ctypes.string_at(
                    w.zbar_symbol_get_data(symbol), w.zbar_symbol_get_data_length(symbol)
                )
                text = decode_qr_bytes(raw) if kind is Symbology.QR_CODE else raw.decode("latin-1")
                points = tuple(
                    (
                        float(w.zbar_symbol_get_loc_x(symbol, i)),
                        float(w.zbar_symbol_get_loc_y(symbol, i)),
                    )
                    for i in range(w.zbar_symbol_get_loc_size(symbol))
                )
                direction = _READ_DIRECTION.get(int(w.zbar_symbol_get_orientation(symbol)))
                found.append(ZbarSymbol(Code(kind, text), points, direction))
    return found
