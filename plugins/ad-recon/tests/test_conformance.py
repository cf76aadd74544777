"""Every ad-recon model and variant passes the core's conformance suite (tiny configs from the specs)."""

from __future__ import annotations

from ad_core.plugin_api import conformance_suite

TestConformance = conformance_suite(plugin="ad-recon")
