"""Helpers the model tests share: a batch from bare images, and a step context as the trainer builds it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from ad_core.plugin_api import Batch, StepContext, TrainingPlan, normal_batch


@pytest.fixture
def as_batch() -> Callable[[torch.Tensor], Batch]:
    return normal_batch


@pytest.fixture
def context_for() -> Callable[[torch.nn.Module], StepContext]:
    """`context_for(model)`: the optimisers of a model that returns a list of them, in a step context."""

    def build(model: torch.nn.Module) -> StepContext:
        plan = TrainingPlan(total_steps=10, steps_per_epoch=1, num_epochs=10, max_steps=None)
        return StepContext(list(model.configure_optimizers(plan)), [], None, None)

    return build
