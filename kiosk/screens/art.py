"""Gift pictures without image files: a calm colour per gift, greyed when unavailable."""

from __future__ import annotations

import zlib

PALETTE = (
    (0.85, 0.33, 0.24),
    (0.18, 0.55, 0.34),
    (0.16, 0.42, 0.69),
    (0.80, 0.55, 0.10),
    (0.55, 0.30, 0.62),
    (0.10, 0.55, 0.60),
)


def tile_colour(sku: str, available: bool) -> tuple[float, float, float, float]:
    r, g, b = PALETTE[zlib.crc32(sku.encode()) % len(PALETTE)]
    if not available:
        grey = (r + g + b) / 3
        return (grey * 0.8 + 0.3, grey * 0.8 + 0.3, grey * 0.8 + 0.3, 1.0)
    return (r, g, b, 1.0)
