"""GLASS and SuperSimpleNet on the core trainer: a run killed mid-epoch or at an epoch's start and resumed ends with
the weights of an uninterrupted run (the synthesis generator resumes, and GLASS's feature centre is the one of the
epoch the run resumes in)."""

from __future__ import annotations

import pytest
import torch

from ad_core.building import build_model
from ad_core.plugin_api import GradientTrainer, Killed, kill_training_after, normal_batch, seed_everything

TINY = {
    # the hypersphere projection reads the epoch's feature centre
    "glass": {"backbone": "resnet18", "embed_dim": 32, "discriminator_hidden": 16, "ascent_steps": 2,
              "distribution": "hypersphere"},
    "supersimplenet": {"backbone": "resnet18", "noise_std": 0.5},
}
BATCHES, EPOCHS = 3, 2


def batches() -> list:
    g = torch.Generator().manual_seed(0)
    return [normal_batch(torch.rand(2, 3, 32, 32, generator=g)) for _ in range(BATCHES)]


def fit(name: str, folder, kill_after: int | None = None, resume: bool = False) -> torch.nn.Module:
    seed_everything(0)
    model, _ = build_model(name, pretrained=False, **TINY[name])
    if kill_after is not None:
        kill_training_after(model, kill_after)
    GradientTrainer(device="cpu", progress=False, num_epochs=EPOCHS, checkpoint_dir=folder, checkpoint_every=1,
                    resume=resume, config={"model": name}).fit(model, batches())
    return model


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("kill_after", [BATCHES + 1, BATCHES], ids=["mid-epoch", "at-epoch-start"])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(name, kill_after, tmp_path) -> None:
    straight = fit(name, tmp_path / "straight")
    with pytest.raises(Killed):
        fit(name, tmp_path / "resumed", kill_after=kill_after)  # in the second epoch's second or first batch
    resumed = fit(name, tmp_path / "resumed", resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
