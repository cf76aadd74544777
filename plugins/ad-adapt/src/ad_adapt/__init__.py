"""ad-adapt: feature-adaptation anomaly detection models for ad-core."""

__version__ = "0.1.0"
