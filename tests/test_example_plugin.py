"""The third-party plugin example passes the conformance suite, registered without any core change."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ad_core.testing import ModelConformance

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin" / "src"


@pytest.fixture(scope="class", autouse=True)
def example_plugin():
    sys.path.insert(0, str(EXAMPLE_SRC))
    from adcore_pixelstats import plugin

    from ad_core.plugins import register_plugin

    unregister = register_plugin(plugin, "adcore-pixelstats")
    yield
    unregister()
    sys.path.remove(str(EXAMPLE_SRC))


class TestPixelStatsConformance(ModelConformance):
    model_name = "pixelstats-blur"
