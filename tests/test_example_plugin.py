"""The third-party plugin example passes the conformance suite, registered without any core change."""

from __future__ import annotations

import sys
from pathlib import Path

from ad_core.testing import conformance_suite

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin" / "src"
sys.path.insert(0, str(EXAMPLE_SRC))  # the example is not installed in the test environment

from adcore_pixelstats import plugin  # noqa: E402

TestPixelStatsConformance = conformance_suite(plugin="adcore-pixelstats", module=plugin)


def test_a_suite_restricted_to_an_unregistered_model_is_a_clear_error() -> None:
    import pytest

    with pytest.raises(LookupError, match="registers no model"):
        conformance_suite(plugin="adcore-pixelstats", module=plugin, models=["not-a-model"])
