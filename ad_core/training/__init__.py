"""Training loops shipped with the core, and how a spec names them.

A trainer is built from one `TrainerOptions` value and fits with `fit(model, train, val=None, *, generator=None)`
(`ad_core.protocols.Trainer`); `ad_core.training.gradient` documents the hooks a model provides and the options.
"""

from __future__ import annotations

from ad_core.specs import resolve_ref
from ad_core.training.context import StepContext
from ad_core.training.feature_bank import FeatureBankTrainer
from ad_core.training.gradient import GradientTrainer, NonFiniteLossError
from ad_core.training.options import TrainerOptions, TrainingPlan
from ad_core.training.seed import seed_everything
from ad_core.training.state import TrainingStateError

BUILTIN_TRAINERS = {"feature_bank": FeatureBankTrainer, "gradient": GradientTrainer}


def trainer_class(name: str) -> type:
    """`"feature_bank"`, `"gradient"` or a plugin's own `"module:attr"` trainer (built from a `TrainerOptions`)."""
    if name in BUILTIN_TRAINERS:
        return BUILTIN_TRAINERS[name]
    return resolve_ref(name)


__all__ = ["FeatureBankTrainer", "GradientTrainer", "NonFiniteLossError", "StepContext", "TrainerOptions",
           "TrainingPlan", "TrainingStateError", "seed_everything", "trainer_class"]
