"""Receipt layouts with sample values, previewed on both paper widths: for docs and tests.

``python -m drivers.printer.gallery DIR`` writes ``<layout>-<58|80>mm.png`` into DIR for this
library's own layout, the test page; an application passes its samples to
:func:`write_gallery`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from drivers.printer import receipts as r
from drivers.printer.document import Receipt
from drivers.printer.preview import render_preview
from drivers.printer.profiles import PROFILES

Sample = Callable[[int], Receipt]  # the paper's column count -> a receipt


def sample_test_page(header: r.ReceiptHeader) -> Sample:
    """The technician's test page under ``header``, as a simulated printer reports it."""
    return lambda w: r.technician_test_page(
        r.TechnicianTestPage(header, "sim:-", 80 if w > 32 else 58, "gb18030", ("paper: ok",)), w
    )


HEADER = r.ReceiptHeader("华联超市 人民路店", "S001", "K001", "2026-11-23 10:15")

SAMPLES: dict[str, Sample] = {"test-page": sample_test_page(HEADER)}


def write_gallery(folder: Path, samples: Mapping[str, Sample] = SAMPLES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in samples.items():
        for mm in (58, 80):
            profile = PROFILES[f"generic-{mm}"]
            path = folder / f"{name}-{mm}mm.png"
            render_preview(build(profile.columns), profile).save(path, optimize=True)
            written.append(path)
    return written


if __name__ == "__main__":
    for written in write_gallery(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written)
