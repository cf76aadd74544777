"""ad-core: industrial visual anomaly detection in pure PyTorch."""

__version__ = "0.1.0"
