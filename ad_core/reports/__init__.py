"""Run outputs for people: results text and JSON, score plots, and anomaly-map pictures (DESIGN §6)."""

from ad_core.reports.maps import (
    colorize,
    denormalize,
    panel_size,
    sanitize_name,
    save_map_panels,
    save_map_png,
)
from ad_core.reports.plots import plot_histogram, plot_roc
from ad_core.reports.text import format_results_txt, format_table, write_results

__all__ = [
    "colorize",
    "denormalize",
    "format_results_txt",
    "format_table",
    "panel_size",
    "plot_histogram",
    "plot_roc",
    "sanitize_name",
    "save_map_panels",
    "save_map_png",
    "write_results",
]
