"""ad-core: industrial visual anomaly detection in pure PyTorch.

Imports are lazy so that `import ad_core` (and `adcore list-models`) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "train": "ad_core.runner",
    "train_models": "ad_core.runner",
    "benchmark": "ad_core.benchmarking",
    "RunResult": "ad_core.runner",
    "load_model": "ad_core.checkpoint",
    "build_ensemble": "ad_core.ensemble",
    "build_ensembles": "ad_core.ensemble",
    "build_model": "ad_core.building",
    "export": "ad_core.exporting",
    "ExportResult": "ad_core.exporting",
    "settings": "ad_core.settings",
    "set_globals": "ad_core.settings",
    "ModelSpec": "ad_core.specs",
    "hookimpl": "ad_core.hookspecs",
    "hookspec": "ad_core.hookspecs",
    "get_registry": "ad_core.plugins",
    "register_plugin": "ad_core.plugins",
    "get_dataset": "ad_core.data",
    "Prediction": "ad_core.types",
    "Batch": "ad_core.types",
    "Sample": "ad_core.types",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ad_core' has no attribute {name!r}")
