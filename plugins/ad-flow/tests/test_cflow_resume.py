"""CFlow on the core trainer: a run killed mid-epoch and resumed ends with the weights and the per-scale
log-likelihood maxima of an uninterrupted run (the fiber shuffle's generator and the running maxima resume)."""

from __future__ import annotations

import pytest
import torch

from ad_core.plugin_api import GradientTrainer, Killed, kill_training_after, normal_batch, seed_everything
from ad_flow.cflow import CFlow


BATCHES = 5


def batches() -> list:
    """Images, then a last batch of far larger values, which the flow finds unlikely: the epoch's maximum comes
    from before the kill in that batch, so a resume that forgot it would differ (the test checks that)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, 32, 32, generator=g) for _ in range(BATCHES)]
    return [normal_batch(x) for x in images[:-1]] + [normal_batch(50 * images[-1])]


def fit(folder, kill_after: int | None = None, resume: bool = False) -> CFlow:
    seed_everything(0)
    model = CFlow(backbone="resnet18", coupling_blocks=1, fiber_batch_size=8, pretrained=False)
    if kill_after is not None:
        kill_training_after(model, kill_after)
    GradientTrainer(device="cpu", progress=False, num_epochs=2, checkpoint_dir=folder, checkpoint_every=1,
                    resume=resume, config={"model": "cflow"}).fit(model, batches())
    return model


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_state(tmp_path) -> None:
    straight = fit(tmp_path / "straight")
    with pytest.raises(Killed):
        fit(tmp_path / "resumed", kill_after=2 * BATCHES - 1)  # killed in the last batch of the second epoch
    resumed = fit(tmp_path / "resumed", resume=True)
    assert bool(torch.isfinite(straight.log_prob_max).all())
    assert bool((straight.log_prob_max > -2).all())  # set before the kill: the last, unlikely batch is far lower
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
