"""Fixtures of the lifecycle tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lifecycle.releases import shared_wheelhouse


@pytest.fixture
def no_index(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip, wherever a test's update runs it, installs the dependencies from
    :func:`shared_wheelhouse` and asks no package index: the index's answers are the same for
    every install of a run and cost seconds each time. The installs themselves are real."""
    wheelhouse = shared_wheelhouse(tmp_path_factory)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    return wheelhouse
