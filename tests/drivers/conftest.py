"""Shared fixtures of the driver tests: where the barcode photos are, and how to load them.

The photos the tests name are a curated subset kept in ``tests/data/barcodes``, so every
clone runs them. The full sets (``KIOSK_BARCODES`` if set, else ``shared/data/barcodes``
beside the checkout, which the benchmark reads) add sweeps over every photo of a set; only
those tests skip when the full sets are absent. Point ``KIOSK_BARCODES`` at a missing
folder to run the tests as a clean clone does.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.datasets import barcode_dir

BARCODES = Path(__file__).resolve().parent.parent / "data" / "barcodes"
_NAMED = os.environ.get("KIOSK_BARCODES")
FULL_SETS = Path(_NAMED) if _NAMED else barcode_dir()
NO_CODE_SET = "falsepositives-2"


def barcode_image(relative: str, root: Path = BARCODES) -> np.ndarray:
    path = root / relative
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image


def expected_text(relative: str, root: Path = BARCODES) -> str:
    return (root / relative).with_suffix(".txt").read_text("utf-8").rstrip()


def curated_images(*, with_code: bool) -> list[str]:
    """The curated photos, as paths relative to ``BARCODES``: those with a code, or the rest."""
    found = sorted(
        path.relative_to(BARCODES).as_posix()
        for path in BARCODES.glob("*/*.png")
        if (path.parent.name != NO_CODE_SET) == with_code
    )
    assert found, f"no curated test images in {BARCODES}"
    return found


def full_set(name: str) -> Path:
    """One folder of the full sets; the test skips when the full sets are not beside us."""
    folder = FULL_SETS / name
    if not folder.is_dir():
        pytest.skip(f"full barcode image sets not present: {folder}")
    return folder
