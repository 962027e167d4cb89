"""Station tests: a real center on SQLite with simulated devices, no window."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.station.center import KioskCenter, open_center
from edge.station.seed import DemoPeople, seed_demo


@pytest.fixture
def center(tmp_path: Path) -> Iterator[KioskCenter]:
    opened = open_center(tmp_path / "data", simulate=True)
    yield opened
    opened.close()


@pytest.fixture
def people(center: KioskCenter) -> DemoPeople:
    return seed_demo(center.app)
