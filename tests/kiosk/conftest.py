"""View-model tests: real center on SQLite and simulators, work run inline, no window."""

from __future__ import annotations

import os

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_CONFIG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")

import pytest

from edge.station.center import open_center
from edge.station.seed import seed_demo


@pytest.fixture
def center(tmp_path):
    c = open_center(tmp_path / "data", simulate=True)
    yield c
    c.close()


@pytest.fixture
def people(center):
    return seed_demo(center.app)


@pytest.fixture
def runner():
    from kiosk.viewmodels.base import InlineRunner

    return InlineRunner()


@pytest.fixture
def session():
    from kiosk.viewmodels.session import SessionViewModel

    return SessionViewModel(warn_s=30, clear_s=45)
