"""The decode pipeline: a cheap pass first, the other decoder and image variants on a miss.

Measured on the zxing black-box photos (``python -m bench.scan_bench``): zxing-cpp on the
grayscale image with only our three symbologies finds most codes in about a third of the time
of zxing-cpp's defaults; ZBar finds a different set of the rest (blurred EAN-13s); a contrast
-limited equalisation (CLAHE) recovers a few dim ones. A frame without macro-scale contrast
(blank wall, sensor noise) cannot hold a code and is rejected before any decoder runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers._lazy import require
from drivers.scanner._zbar import ZbarSymbol, zbar_decode
from drivers.scanner.code import MEMBER_CENTER_SYMBOLOGIES, Code, Symbology
from drivers.scanner.presented import (
    LocatedCode,
    Point,
    ScanResult,
    choose,
    locate,
    same_symbol,
)

Gray = npt.NDArray[np.uint8]
Found = list[ZbarSymbol]  # zxing-cpp's results are put in the same shape

_ZXING_NAMES = {
    Symbology.QR_CODE: "QRCode",
    Symbology.CODE_128: "Code128",
    Symbology.EAN_13: "EAN13",
}


@dataclass(frozen=True)
class DecodeSettings:
    """Tuning of the pipeline; the defaults are the measured ones.

    Attributes:
        symbologies: kinds to decode; anything else is never reported.
        min_contrast: grey levels between the darkest and lightest cell of a 32x24
            thumbnail below which a frame is rejected unread. Codes in the test photos
            score 63 and more; a blank frame scores 0 and sensor noise about 20.
        fallbacks: run ZBar and the contrast variant when the cheap pass finds nothing.
        zbar_density: ZBar's scan-line spacing for 1-D codes.
    """

    symbologies: frozenset[Symbology] = field(default=MEMBER_CENTER_SYMBOLOGIES)
    min_contrast: int = 32
    fallbacks: bool = True
    zbar_density: int = 3


class CodeDecoder:
    """Finds member-center codes in a camera image.

    Example:
        >>> decoder = CodeDecoder()
        >>> codes = decoder.decode(cv2.imread("card.jpg"))  # doctest: +SKIP
        >>> decoder.scan(cv2.imread("book.jpg")).secondary  # doctest: +SKIP
        (LocatedCode(code=Code(format=<Symbology.EAN_13: 'EAN_13'>, ...), ...),)
    """

    def __init__(self, settings: DecodeSettings | None = None) -> None:
        self.settings = settings or DecodeSettings()
        self._cv2 = require("cv2", "install opencv-python-headless")
        self._zxing = require("zxingcpp", "install zxing-cpp")
        names = [_ZXING_NAMES[s] for s in sorted(self.settings.symbologies)]
        self._zx_formats = self._zxing.barcode_formats_from_str(",".join(names))
        self._from_zxing = {
            getattr(self._zxing.BarcodeFormat, name): s for s, name in _ZXING_NAMES.items()
        }
        self._clahe = self._cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        self._linear = [
            s for s in (Symbology.CODE_128, Symbology.EAN_13) if s in self.settings.symbologies
        ]

    def decode(self, image: npt.NDArray[np.uint8], fallbacks: bool = True) -> tuple[Code, ...]:
        """The code presented in ``image`` (BGR, BGRA or grayscale): one code, or none.

        ``fallbacks=False`` runs the cheap pass only; a live stream does so on most frames,
        since a code held before the camera stays there for many of them.
        """
        return self.scan(image, fallbacks).codes

    def scan(self, image: npt.NDArray[np.uint8], fallbacks: bool = True) -> ScanResult:
        """The presented code in ``image`` with where it is, and the other codes seen with it.

        Passes run until one finds a code fully in view (or none is left); the codes of all
        passes run are candidates, each once.
        """
        gray = self.to_gray(image)
        if not self.has_contrast(gray):
            return ScanResult()
        located: dict[Code, LocatedCode] = {}
        for attempt in self._attempts(gray, fallbacks and self.settings.fallbacks):
            earlier = list(located.values())
            for code, points, direction in attempt():
                if code in located:
                    continue
                new = locate(gray, code, points, direction)
                # a symbol an earlier pass read keeps that reading: the passes run in order
                # of how much their readings are trusted
                if not any(same_symbol(new, old) for old in earlier):
                    located[code] = new
            if any(c.in_full_view for c in located.values()):
                break
        return choose(located.values())

    def to_gray(self, image: npt.NDArray[np.uint8]) -> Gray:
        if image.ndim == 2:
            return image
        code = self._cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else self._cv2.COLOR_BGR2GRAY
        return self._cv2.cvtColor(image, code)  # type: ignore[no-any-return]

    def has_contrast(self, gray: Gray) -> bool:
        """Whether the frame shows dark-on-light structure bigger than noise (about 0.1 ms)."""
        thumb = self._cv2.resize(gray, (32, 24), interpolation=self._cv2.INTER_AREA)
        return int(thumb.max()) - int(thumb.min()) >= self.settings.min_contrast

    def _attempts(self, gray: Gray, fallbacks: bool) -> Iterable[Callable[[], Found]]:
        yield lambda: self._zxing_pass(gray)
        if not fallbacks:
            return
        yield lambda: self._zbar_pass(gray, with_qr=True)
        enhanced = self._clahe.apply(gray)
        yield lambda: self._zxing_pass(enhanced)
        # ZBar's QR finder found nothing more on enhanced images; its 1-D scan did
        yield lambda: self._zbar_pass(enhanced, with_qr=False)

    def _zxing_pass(self, gray: Gray) -> Found:
        plain = self._zxing.TextMode.Plain  # HRI would print control bytes as "<SOH>"
        results = self._zxing.read_barcodes(
            gray, formats=self._zx_formats, try_invert=False, text_mode=plain
        )
        found = []
        for r in results:
            symbology = self._from_zxing.get(r.format)
            if symbology is None:  # a relative of a format asked for (Micro QR for QR): not ours
                continue
            corners = _corners(r.position)
            (x0, y0), (x1, y1) = corners[0], corners[1]  # top left, top right
            norm = math.hypot(x1 - x0, y1 - y0) or 1.0
            direction = ((x1 - x0) / norm, (y1 - y0) / norm)
            found.append(ZbarSymbol(Code(symbology, r.text), corners, direction))
        return found

    def _zbar_pass(self, gray: Gray, with_qr: bool) -> Found:
        found = zbar_decode(gray, self._linear, self.settings.zbar_density) if self._linear else []
        if found or not with_qr or Symbology.QR_CODE not in self.settings.symbologies:
            return found
        # ZBar's QR finder costs as much as everything else; half size loses no QR here.
        if min(gray.shape[:2]) < 300:
            return zbar_decode(gray, [Symbology.QR_CODE])
        small = self._cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=self._cv2.INTER_AREA)
        return [
            s._replace(points=tuple((2 * x, 2 * y) for x, y in s.points))
            for s in zbar_decode(small, [Symbology.QR_CODE])
        ]


def _corners(position: Any) -> tuple[Point, ...]:
    """zxing-cpp's position (top left, top right, bottom right, bottom left) as points."""
    corners = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    return tuple((float(p.x), float(p.y)) for p in corners)
