"""Shared fixtures of the driver tests: where the barcode photos are, and how to load them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.datasets import barcode_dir

BARCODES = barcode_dir()


def barcode_image(relative: str) -> np.ndarray:
    path = BARCODES / relative
    if not path.exists():
        pytest.skip(f"test images not present: {path}")
    image = cv2.imread(str(path))
    assert image is not None
    return image


def expected_text(relative: str) -> str:
    return (BARCODES / relative).with_suffix(".txt").read_text("utf-8").rstrip()
