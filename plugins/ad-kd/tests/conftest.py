"""Helpers the model tests share: a batch from bare images, and a few optimiser steps as the trainer takes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from ad_core.plugin_api import Batch, normal_batch


@pytest.fixture
def as_batch() -> Callable[[torch.Tensor], Batch]:
    return normal_batch


@pytest.fixture
def train_steps() -> Callable[..., list[float]]:
    """`train_steps(model, optimizer, images, n)`: n steps on the same batch, in train mode; the losses."""

    def run(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, n: int) -> list[float]:
        model.train()
        losses = []
        for _ in range(n):
            loss = model.training_step(normal_batch(images), None)  # automatic models do not read the context
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses

    return run
