"""The one namespace a plugin imports from: what ad-core promises plugin authors across its 0.x releases.

Exports are lazy: `from ad_core.plugin_api import hookimpl, ModelSpec` (all a plugin's registration module
needs) imports neither torch nor any model code, so `adcore list-models` stays fast. Model modules import the
torch-side names (`AnomalyModel`, the trainer types, the components) from here as well.

Anything not listed here is internal and may change without notice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # registration (no torch)
    "hookimpl": "ad_core.hookspecs",
    "ModelSpec": "ad_core.specs",
    "RUN_KEYS": "ad_core.specs",
    # the model side
    "AnomalyModel": "ad_core.model",
    "NotFittedError": "ad_core.model",
    "gaussian_blur": "ad_core.components.maps",
    "resize_map": "ad_core.components.maps",
    "BackboneConfig": "ad_core.components.backbone",
    "FrozenBackbone": "ad_core.components.backbone",
    "FrozenViT": "ad_core.components.vit",
    "Batch": "ad_core.types",
    "Prediction": "ad_core.types",
    "FitReport": "ad_core.types",
    "Model": "ad_core.protocols",
    "FeatureBankModel": "ad_core.protocols",
    "MergeableFeatureBankModel": "ad_core.protocols",
    "World": "ad_core.training.distributed",
    "TrainableModel": "ad_core.protocols",
    "FittableModel": "ad_core.protocols",
    "MissingWeightsError": "ad_core.backbones",
    # trainers
    "Trainer": "ad_core.protocols",
    "FeatureBankTrainer": "ad_core.training",
    "GradientTrainer": "ad_core.training",
    "NonFiniteLossError": "ad_core.training",
    "seed_everything": "ad_core.training",
    "StepContext": "ad_core.training",
    "TrainerOptions": "ad_core.training",
    "TrainingPlan": "ad_core.training",
    "TrainingStateError": "ad_core.training",
    # the conformance suite
    "conformance_suite": "ad_core.testing",
    "fit_tiny": "ad_core.testing",
    "no_network": "ad_core.testing",
    "normal_batch": "ad_core.testing",
    "Killed": "ad_core.testing",
    "kill_training_after": "ad_core.testing",
}
# Shared building blocks live in `ad_core.components` (a package); it is exported as a module.
_MODULES = {"components": "ad_core.components"}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'ad_core.plugin_api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
