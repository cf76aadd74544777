"""The kernel's public API for the layers built on it: the benchmark grid, ensembles, and user scripts.

`ad_core.benchmarking` and `ad_core.ensemble` import from the kernel through this module only (a test scans
their imports), so the kernel's internals can change without breaking them. Exports are lazy: importing this
module costs nothing; each name loads its module when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # running and evaluating one model on one category
    "run_one": "ad_core.runner",
    "available_cpus": "ad_core.threads",
    "configure_threads": "ad_core.threads",
    "evaluate_detector": "ad_core.evaluation",
    "Calibration": "ad_core.evaluation",
    "calibrate": "ad_core.evaluation",
    "members_validation_split": "ad_core.validation",
    "describe_validation": "ad_core.validation",
    "make_loader": "ad_core.runner",
    "run_unified": "ad_core.unified",
    "unified_label": "ad_core.unified",
    "check_unified": "ad_core.unified",
    "metric_summary": "ad_core.unified",
    "normal_subset": "ad_core.runner",
    "SCORES_NAME": "ad_core.runner",
    "resolve_config": "ad_core.building",
    "OptionError": "ad_core.options",
    "check_options": "ad_core.options",
    "FileLock": "ad_core.run_folder",
    "RunFolderBusyError": "ad_core.run_folder",
    "MissingPackageError": "ad_core.errors",
    "get_registry": "ad_core.plugins",
    # detectors and their folders
    "Detector": "ad_core.detector",
    "load_model": "ad_core.checkpoint",
    "register_loader": "ad_core.checkpoint",
    "CheckpointError": "ad_core.checkpoint",
    "file_sha256": "ad_core.checkpoint",
    "WEIGHTS_NAME": "ad_core.checkpoint",
    "META_NAME": "ad_core.checkpoint",
    "check_images": "ad_core.model",
    "export": "ad_core.exporting",
    "ExportError": "ad_core.exporting",
    "resize_map": "ad_core.components.maps",
    "Batch": "ad_core.types",
    "Prediction": "ad_core.types",
    "Sample": "ad_core.types",
    # data
    "get_dataset": "ad_core.data",
    "list_categories": "ad_core.data",
    "ImageTransform": "ad_core.data",
    "read_image": "ad_core.data",
    "to_size": "ad_core.data.transforms",
    "collect_images": "ad_core.inference",
    # settings, files and reports
    "settings": "ad_core.settings",
    "set_globals": "ad_core.settings",
    "resolve_device": "ad_core.settings",
    "atomic_path": "ad_core.io",
    "write_json": "ad_core.io",
    "write_text": "ad_core.io",
    "format_table": "ad_core.reports",
    "format_results_txt": "ad_core.reports",
    "write_results": "ad_core.reports",
    "ANOMALOUS_COLOR": "ad_core.reports.plots",
    "NORMAL_COLOR": "ad_core.reports.plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ad_core.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
