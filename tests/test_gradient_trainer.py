"""The gradient trainer, proven on the test-only tiny autoencoder."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ad_core.training import GradientTrainer, NonFiniteLossError, seed_everything
from ad_core.types import Batch


def batches(n: int = 4, size: int = 16, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.rand(4, 3, size, size, generator=g) * 0.2 + 0.4
        out.append(Batch(images, torch.zeros(4, dtype=torch.long), None, ["x"] * 4, ["c"] * 4))
    return out


def fresh(**kw):
    from tiny_plugin import TinyAE

    seed_everything(0)
    return TinyAE(**kw)


def test_loss_decreases_and_model_is_fitted() -> None:
    model = fresh()
    report = GradientTrainer(device="cpu", num_epochs=6, progress=False).fit(model, batches())
    losses = [h["loss"] for h in report.history]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert model.is_fitted


def test_max_steps_stops_mid_epoch() -> None:
    report = GradientTrainer(device="cpu", max_steps=6, progress=False).fit(fresh(), batches())
    assert report.steps == 6 and report.epochs == 2


def test_nan_loss_raises_clear_error() -> None:
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 3"):
        GradientTrainer(device="cpu", num_epochs=2, progress=False).fit(fresh(blow_up_at=3), batches())


def grad_norm(model) -> float:
    return torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])).item()


def test_gradient_clipping_bounds_the_gradient() -> None:
    clipped, free = fresh(), fresh()
    GradientTrainer(device="cpu", max_steps=1, grad_clip=1e-3, progress=False).fit(clipped, batches(1))
    GradientTrainer(device="cpu", max_steps=1, progress=False).fit(free, batches(1))
    assert grad_norm(clipped) <= 1e-3 * 1.001 < grad_norm(free)


class RecordingVal:
    """A validation set that records the model's weights each time the trainer validates on it."""

    def __init__(self, model: torch.nn.Module, data: list[Batch]) -> None:
        self.model, self.data, self.states = model, data, []

    def __iter__(self):
        self.states.append({k: v.detach().clone() for k, v in self.model.named_parameters()})
        return iter(self.data)


def test_early_stopping_restores_best_epoch() -> None:
    val_good = batches(1, seed=5)[0]
    anomalous = val_good.image.clone()
    anomalous[:, :, 4:12, 4:12] = 1.0
    model = fresh()
    val = RecordingVal(model, [Batch(torch.cat([val_good.image, anomalous]), torch.tensor([0] * 4 + [1] * 4), None,
                                     ["v"] * 8, ["c"] * 8)])
    report = GradientTrainer(device="cpu", num_epochs=30, early_stopping_patience=2, progress=False).fit(
        model, batches(), val
    )
    assert report.epochs < 30
    aurocs = [h["val_image_auroc"] for h in report.history]
    best = report.extra["best_epoch"]
    assert best == 1 + aurocs.index(max(aurocs)) and best < report.epochs  # the last epochs did not improve
    restored = dict(model.named_parameters())
    assert all(torch.equal(restored[k], v) for k, v in val.states[best - 1].items())  # the best epoch's weights
    assert not all(torch.equal(restored[k], v) for k, v in val.states[-1].items())  # not the last epoch's


def test_resume_continues_to_identical_weights(tmp_path) -> None:
    data = batches()
    full = fresh()
    GradientTrainer(device="cpu", num_epochs=4, progress=False).fit(full, data)

    part = fresh()
    GradientTrainer(device="cpu", num_epochs=2, checkpoint_dir=tmp_path, progress=False).fit(part, data)
    resumed = fresh()
    report = GradientTrainer(device="cpu", num_epochs=4, checkpoint_dir=tmp_path, resume=True,
                             progress=False).fit(resumed, data)
    assert report.epochs == 4 and len(report.history) == 2
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_empty_training_set_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        GradientTrainer(device="cpu", num_epochs=1, progress=False).fit(fresh(), DataLoader([]))


class TwoStepsPerBatch(torch.nn.Module):
    """Steps its optimiser twice per batch, as fiber-batch models do."""

    manual_optimization = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.steps = 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        losses = []
        for half in batch.image.chunk(2):
            loss = (half.mean(dim=(0, 2, 3)) - self.weight).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.steps += 1
            losses.append(loss.detach())
        return torch.stack(losses).mean()


def test_manual_optimization_lets_the_model_step() -> None:
    model = TwoStepsPerBatch()
    report = GradientTrainer(device="cpu", num_epochs=3, progress=False).fit(model, batches())
    assert model.steps == 2 * 4 * 3 and report.steps == 4 * 3
    assert report.history[-1]["loss"] < report.history[0]["loss"]
