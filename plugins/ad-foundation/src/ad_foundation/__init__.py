"""ad-foundation: anomaly detection on frozen foundation-model features for ad-core."""

__version__ = "0.1.0"
