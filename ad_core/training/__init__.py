"""Training loops shipped with the core, and how a spec names them."""

from __future__ import annotations

from ad_core.specs import resolve_ref
from ad_core.training.feature_bank import FeatureBankTrainer
from ad_core.training.gradient import GradientTrainer, NonFiniteLossError
from ad_core.training.seed import seed_everything
from ad_core.training.state import TrainingStateError

BUILTIN_TRAINERS = {"feature_bank": FeatureBankTrainer, "gradient": GradientTrainer}


def trainer_class(name: str) -> type:
    """`"feature_bank"`, `"gradient"` or a plugin's own `"module:attr"` trainer."""
    if name in BUILTIN_TRAINERS:
        return BUILTIN_TRAINERS[name]
    return resolve_ref(name)


__all__ = ["FeatureBankTrainer", "GradientTrainer", "NonFiniteLossError", "TrainingStateError", "seed_everything", "trainer_class"]
