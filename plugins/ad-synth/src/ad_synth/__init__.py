"""Synthetic-anomaly discriminators for ad-core: SuperSimpleNet and GLASS."""
