"""Dinomaly on the core trainer: a run killed mid-way and resumed ends with the weights of an uninterrupted run
(StableAdamW's state, the warm-up + cosine schedule, the mining ramp's step and the dropout draws all resume)."""

from __future__ import annotations

import pytest
import torch

from ad_core.building import build_model
from ad_core.plugin_api import Killed, kill_training_after
from ad_core.training import GradientTrainer, seed_everything
from ad_core.types import Batch

TINY = {"pretrained": False, "vit_overrides": {"depth": 10, "embed_dim": 32, "num_heads": 2}, "warmup_steps": 2,
        "mining_ramp_steps": 2}
STEPS, CRASH_AT = 3, 1


def batches() -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [Batch(torch.rand(2, 3, 28, 28, generator=g), torch.zeros(2, dtype=torch.long), None, ["a", "b"],
                  ["c", "c"]) for _ in range(2)]


def fit(folder, kill_after: int | None = None, resume: bool = False) -> torch.nn.Module:
    seed_everything(0)
    model, _ = build_model("dinomaly-small-224", **TINY)
    if kill_after is not None:
        kill_training_after(model, kill_after)
    GradientTrainer(device="cpu", progress=False, max_steps=STEPS, grad_clip=0.1, checkpoint_dir=folder,
                    checkpoint_every=1, resume=resume, config={"model": "dinomaly-small-224"}).fit(model, batches())
    return model


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path) -> None:
    straight = fit(tmp_path / "straight")
    with pytest.raises(Killed):
        fit(tmp_path / "resumed", kill_after=CRASH_AT)
    resumed = fit(tmp_path / "resumed", resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
