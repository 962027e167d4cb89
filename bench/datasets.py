"""Where the camera photos of codes live: the full sets, read in place by the benchmarks.

The decoder's tests read a small curated subset kept in ``tests/data/barcodes``.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def barcode_dir() -> Path:
    """``KIOSK_BARCODES``, else ``shared/data/barcodes`` beside the checkout or the workplace."""
    candidates = [
        Path(os.environ["KIOSK_BARCODES"]) if os.environ.get("KIOSK_BARCODES") else None,
        _REPO.parent / "shared" / "data" / "barcodes",
        Path("/work/shared/data/barcodes"),
    ]
    for path in candidates:
        if path is not None and path.is_dir():
            return path
    return _REPO.parent / "shared" / "data" / "barcodes"
