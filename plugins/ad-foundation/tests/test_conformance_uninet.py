"""UniNet and its variants pass the core's conformance suite (tiny configs from the specs)."""

from __future__ import annotations

from ad_core.plugin_api import conformance_suite

TestConformanceUniNet = conformance_suite(plugin="ad-foundation", models=["uninet"])
