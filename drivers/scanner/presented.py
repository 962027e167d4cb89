"""One presented code per frame: which of several codes in view the customer is showing.

A customer at the member desk presents one code at a time, but a frame often holds more: the
price barcode printed beside a book's ISBN, a second card in the same hand, a poster behind
the customer, the inner symbol of a nested QR design. Reporting all of them would make the
kiosk act on codes nobody presented, so the pipeline reports one and keeps the others as
secondary results for diagnostics.

The rule, in order:

1. **Fully in view beats cut by the frame edge.** A customer holds the presented code up to
   the camera; a code that runs off the edge of the picture is one that strays in beside it.
   A 1-D code can still be read with its bars cut, so its outline is measured on the image:
   the bars are followed from the line where the decoder read them until they end (the code
   is in view) or the frame does (the code is cut). A QR code that decodes is in view.
2. **The biggest outline.** The presented code is held closest to the camera, so it is the
   largest in the picture; a code in the background, or nested in another, is smaller.
3. **Nearest the frame centre**, among codes within :data:`SIZE_TIE` of the biggest: two codes
   of about the same size are told apart by where the customer aims.

The rule uses nothing but geometry: no symbology, prefix or content is preferred.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers._lazy import require
from drivers.scanner.code import Code, Symbology

Point = tuple[float, float]
Gray = npt.NDArray[np.uint8]

SIZE_TIE = 0.8
"""Outlines with at least this fraction of the biggest one's area count as the same size."""

EDGE_MARGIN_PX = 2.0
"""An outline within this many pixels of the frame border is cut by the frame edge."""

_STEP_PX = 2.0  # spacing of the lines on which 1-D bars are followed
_MIN_CORRELATION = 0.6  # below this, the next line no longer shows the same bars
_SAMPLES = (32, 128)  # samples along a 1-D code: one per pixel, within these bounds


@dataclass(frozen=True)
class LocatedCode:
    """A decoded code with where it is in the frame.

    Attributes:
        code: what was decoded.
        outline: four corners of the code in pixels (for a 1-D code, its bars' extent).
        area: the outline's area in square pixels.
        centre_offset: distance of the outline's centre from the frame's centre, 0 at the
            centre and 1 at a corner.
        in_full_view: ``False`` when the outline reaches the frame edge.
    """

    code: Code
    outline: tuple[Point, ...]
    area: float
    centre_offset: float
    in_full_view: bool


@dataclass(frozen=True)
class ScanResult:
    """What one frame shows: the presented code, if any, and the other codes decoded with it.

    Only :attr:`presented` is a scan; :attr:`secondary` is for diagnostics and never acted on.
    """

    presented: LocatedCode | None = None
    secondary: tuple[LocatedCode, ...] = ()

    @property
    def codes(self) -> tuple[Code, ...]:
        """The presented code as a tuple of zero or one codes."""
        return () if self.presented is None else (self.presented.code,)


def locate(
    gray: Gray, code: Code, points: Sequence[Point], direction: Point | None = None
) -> LocatedCode:
    """Measures the outline of ``code``, found by a decoder at ``points``, in ``gray``.

    ``direction`` is the direction a 1-D code reads in, where the decoder tells it; it is
    estimated from the image otherwise.
    """
    height, width = gray.shape[:2]
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    # A QR code decodes only with its finder patterns and nearly all its modules in view, so
    # one that decodes is in view even when the frame is cropped tight around it. A 1-D code
    # reads on a single line, so it may be decoded with most of its bars off the frame.
    cut = False
    if code.format is not Symbology.QR_CODE and len(pts) >= 1:
        pts, cut = _follow_bars(gray, pts, direction)
        cut = cut or _touches_edge(pts, width, height)
    centre = pts.mean(axis=0)
    half_diagonal = math.hypot(width, height) / 2
    offset = math.hypot(centre[0] - width / 2, centre[1] - height / 2) / half_diagonal
    return LocatedCode(
        code=code,
        outline=tuple((float(x), float(y)) for x, y in pts),
        area=_polygon_area(pts),
        centre_offset=min(1.0, offset),
        in_full_view=not cut,
    )


def choose(located: Iterable[LocatedCode]) -> ScanResult:
    """Applies the rule of this module: the presented code first, the others as secondary."""
    candidates = list(located)
    if not candidates:
        return ScanResult()
    pool = [c for c in candidates if c.in_full_view] or candidates
    biggest = max(c.area for c in pool)
    contenders = [c for c in pool if c.area >= SIZE_TIE * biggest]
    presented = min(contenders, key=lambda c: c.centre_offset)
    rest = sorted(
        (c for c in candidates if c is not presented),
        key=lambda c: (not c.in_full_view, -c.area, c.centre_offset),
    )
    return ScanResult(presented, tuple(rest))


def same_symbol(a: LocatedCode, b: LocatedCode) -> bool:
    """Whether two readings are of one symbol: same kind, outlines overlapping by half.

    Two decoders (or one on two versions of the frame) can read one damaged symbol as two
    texts; the outlines tell it is one. Nested codes, such as a small QR code printed
    inside a big one, overlap by far less.
    """
    if a.code.format is not b.code.format:
        return False
    cv2 = require("cv2", "install opencv-python-headless")
    hulls = [cv2.convexHull(np.asarray(c.outline, np.float32)) for c in (a, b)]
    overlap, _ = cv2.intersectConvexConvex(hulls[0], hulls[1])
    smaller = min(a.area, b.area)
    return bool(smaller > 0 and overlap > 0.5 * smaller)


def _touches_edge(pts: npt.NDArray[np.float64], width: int, height: int) -> bool:
    return bool(
        pts[:, 0].min() < EDGE_MARGIN_PX
        or pts[:, 1].min() < EDGE_MARGIN_PX
        or pts[:, 0].max() > width - 1 - EDGE_MARGIN_PX
        or pts[:, 1].max() > height - 1 - EDGE_MARGIN_PX
    )


def _polygon_area(pts: npt.NDArray[np.float64]) -> float:
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _follow_bars(
    gray: Gray, pts: npt.NDArray[np.float64], direction: Point | None
) -> tuple[npt.NDArray[np.float64], bool]:
    """The rectangle a 1-D code's bars cover, and whether they run off the frame.

    Decoders locate a 1-D code by the scan lines that read it, which may be a sliver of its
    bars or a single point. The direction across the bars is the reading direction, or the
    dominant gradient orientation around those lines; the code's ends along it are where
    the bars give way to its quiet zone (:func:`_code_span`). From the middle line, lines
    parallel to it are sampled outwards on both sides for as long as each still shows the
    same bars: it correlates with the line before (allowing a one-sample slant) and keeps at
    least a quarter of the middle line's contrast. Bars still there when the frame ends are
    cut.
    """
    height, width = gray.shape[:2]
    cv2 = require("cv2", "install opencv-python-headless")
    across = np.asarray(direction, np.float64) if direction else _across_bars(gray, pts)
    along = np.array([-across[1], across[0]])
    s = pts @ across
    mid_t = float((pts @ along).mean())
    start, end = float(s.min()), float(s.max())
    if end - start < 8:
        start, end = _code_span(cv2, gray, pts.mean(axis=0), across, along)
    length = end - start
    n = int(min(max(length, _SAMPLES[0]), _SAMPLES[1]))
    ss = np.linspace(start + 0.05 * length, end - 0.05 * length, n, dtype=np.float32)
    # lines from the middle one out to the frame's edges on both sides, one step beyond
    frame = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]]) @ along
    below = int((mid_t - frame.min()) / _STEP_PX) + 1
    above = int((frame.max() - mid_t) / _STEP_PX) + 1
    offsets = (np.arange(-below, above + 1) * _STEP_PX + mid_t).astype(np.float32)
    xs = ss[None, :] * np.float32(across[0]) + offsets[:, None] * np.float32(along[0])
    ys = ss[None, :] * np.float32(across[1]) + offsets[:, None] * np.float32(along[1])
    inside = (
        (xs.min(axis=1) >= 0)
        & (xs.max(axis=1) <= width - 1)
        & (ys.min(axis=1) >= 0)
        & (ys.max(axis=1) <= height - 1)
    )
    rows = cv2.remap(gray, xs, ys, cv2.INTER_LINEAR).astype(np.float32)
    # a high-pass along the line: bars stay, shading across the label goes
    window = max(3, n // 24) | 1
    rows -= cv2.blur(rows, (window, 1), borderType=cv2.BORDER_REPLICATE)
    energy = np.linalg.norm(rows, axis=1)
    rows /= np.where(energy == 0, 1.0, energy)[:, None]
    # similarity of each line to the one before it, the best of shifts by -1, 0, +1 sample
    prev, cur = rows[:-1], rows[1:]
    similar = np.maximum.reduce(
        [
            np.einsum("ij,ij->i", prev, cur),
            np.einsum("ij,ij->i", prev[:, 1:], cur[:, :-1]),
            np.einsum("ij,ij->i", prev[:, :-1], cur[:, 1:]),
        ]
    )
    same_bars = (energy[1:] >= 0.25 * energy[below]) & (similar >= _MIN_CORRELATION)
    # line j continues the bars of line j - 1 (going up) or j + 1 (going down)
    up = same_bars[below:] & inside[below + 1 :]
    down = same_bars[:below][::-1] & inside[:below][::-1]
    stop_up = int(np.argmin(up)) if not up.all() else len(up)
    stop_down = int(np.argmin(down)) if not down.all() else len(down)
    ends = [below - stop_down, below + stop_up]
    cut = not (inside[ends[0] - 1] if ends[0] > 0 else False) or not (
        inside[ends[1] + 1] if ends[1] + 1 < len(inside) else False
    )
    t0, t1 = float(offsets[ends[0]]), float(offsets[ends[1]])
    corners = np.array(
        [
            start * across + t0 * along,
            end * across + t0 * along,
            end * across + t1 * along,
            start * across + t1 * along,
        ]
    )
    return corners, cut


def _code_span(
    cv2: Any,
    gray: Gray,
    point: npt.NDArray[np.float64],
    across: npt.NDArray[np.float64],
    along: npt.NDArray[np.float64],
) -> tuple[float, float]:
    """Where a 1-D code through ``point`` begins and ends along ``across``.

    Bar edges (steps of the profile) inside a code are at most a few modules apart; its
    quiet zone is wider (7 modules for EAN-13, 10 for Code 128). The span runs outwards from
    ``point`` until two edges are more than 5.5 modules apart, a module being the small gap
    between edges near ``point``.
    """
    height, width = gray.shape[:2]
    reach = int(math.hypot(width, height))
    ss = np.arange(-reach, reach + 1, dtype=np.float64)
    xs = point[0] + ss * across[0]
    ys = point[1] + ss * across[1]
    inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    line = cv2.remap(
        gray,
        xs[None, :].astype(np.float32),
        ys[None, :].astype(np.float32),
        cv2.INTER_LINEAR,
    )[0].astype(np.float64)
    step = np.abs(np.diff(line))
    local = step[max(0, reach - 20) : reach + 20]
    threshold = 0.3 * float(local.max()) if local.size else 0.0
    peaks = np.flatnonzero(
        (step[1:-1] >= step[:-2]) & (step[1:-1] > step[2:]) & (step[1:-1] > threshold)
    )
    peaks = peaks[inside[peaks + 1]] + 1
    centre = int(np.searchsorted(peaks, reach))
    if threshold == 0 or centre == 0 or centre >= len(peaks):
        return float(point @ across) - 4, float(point @ across) + 4
    near = np.diff(peaks[max(0, centre - 8) : centre + 8])
    module = float(np.percentile(near, 20)) if near.size else 1.0
    gaps = np.diff(peaks) > 5.5 * module
    lo = centre - 1
    while lo > 0 and not gaps[lo - 1]:
        lo -= 1
    hi = centre
    while hi < len(peaks) - 1 and not gaps[hi]:
        hi += 1
    base = float(point @ across)
    return base + float(ss[peaks[lo]]), base + float(ss[peaks[hi]])


def _across_bars(gray: Gray, pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Unit vector across the bars: the dominant gradient orientation around ``pts``."""
    height, width = gray.shape[:2]
    x0, y0 = (int(v) for v in np.floor(pts.min(axis=0)) - 3)
    x1, y1 = (int(v) for v in np.ceil(pts.max(axis=0)) + 4)
    patch = gray[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)].astype(np.float64)
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return np.array([1.0, 0.0])
    gy, gx = np.gradient(patch)
    sxx, syy, sxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    angle = 0.5 * math.atan2(2 * sxy, sxx - syy)
    return np.array([math.cos(angle), math.sin(angle)])
