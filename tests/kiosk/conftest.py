"""View-model tests: real center on SQLite and simulators, work run inline, no window."""

from __future__ import annotations

import os

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_CONFIG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")

import pytest

from tests.station.conftest import center, people

__all__ = ["center", "people"]


@pytest.fixture
def runner():
    from kiosk.viewmodels.base import InlineRunner

    return InlineRunner()


@pytest.fixture
def session():
    from kiosk.viewmodels.session import SessionViewModel

    return SessionViewModel(warn_s=30, clear_s=45)
