"""Shared fixtures: the test-only plugin, registered for the duration of a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes `tiny_plugin` importable by its factory string


@pytest.fixture
def tiny_plugin():
    from tiny_plugin import TinyPlugin

    from ad_core.plugins import register_plugin

    unregister = register_plugin(TinyPlugin(), "tiny-plugin")
    yield
    unregister()


@pytest.fixture
def reliability_plugin():
    """Test-only models that start from a pretrained file, or have a bug (see `reliability_plugin.py`)."""
    from reliability_plugin import ReliabilityPlugin

    from ad_core.plugins import register_plugin

    unregister = register_plugin(ReliabilityPlugin(), "reliability-plugin")
    yield
    unregister()


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Run outputs under a temporary folder."""
    from ad_core.settings import settings

    monkeypatch.setattr(settings, "output_dir", tmp_path / "outputs")
    return tmp_path / "outputs"
