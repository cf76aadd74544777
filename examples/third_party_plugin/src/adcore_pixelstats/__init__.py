"""Example third-party plugin for ad-core."""
