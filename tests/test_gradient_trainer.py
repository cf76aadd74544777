"""The gradient trainer, proven on test-only tiny models: hooks, optimisers, precision, EMA, accumulation,
options, exact resume, refusal of other settings and divergence."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ad_core.model import AnomalyModel
from ad_core.training import (
    GradientTrainer,
    NonFiniteLossError,
    TrainerOptions,
    TrainingStateError,
    seed_everything,
)
from ad_core.training.state import read_training_meta
from ad_core.types import Batch, Sample, collate


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


def test_empty_training_set_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        GradientTrainer(device="cpu", num_epochs=1, progress=False).fit(fresh(), DataLoader([]))


def test_an_unknown_option_is_an_error_listing_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown trainer option\(s\) \['num_epoch'\].*'num_epochs'"):
        GradientTrainer(device="cpu", num_epoch=3)
    with pytest.raises(TypeError, match="unknown trainer option.*'precision'"):
        TrainerOptions.from_run({"num_epochs": 1}, colour="red")


def test_fp16_on_the_cpu_is_an_error_with_advice() -> None:
    with pytest.raises(ValueError, match="precision='16'.*CUDA.*'bf16'"):
        GradientTrainer(device="cpu", precision="16")


# -- a small linear model with every hook recorded ---------------------------------------------------------
class Linear(AnomalyModel):
    """score = |w·mean colour - 1|; the loss pulls w·mean colour to 1."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("scale", torch.ones(()))
        self.lr, self.momentum = lr, momentum
        self.calls: list[str] = []
        self.plans: list = []

    def on_fit_start(self, loader) -> None:
        self.calls.append("fit_start")

    def configure_optimizers(self, plan):
        self.calls.append("configure")
        self.plans.append(plan)
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        return {"optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.9),
                "interval": "step"}

    def on_train_epoch_start(self, epoch: int) -> None:
        self.calls.append(f"epoch_start {epoch}")

    def training_step(self, batch, ctx):
        self.calls.append("step")
        return ((batch.image.mean(dim=(2, 3)) * torch.rand(1)) @ self.weight - 1).pow(2).mean() * self.scale

    def on_train_batch_end(self, step: int) -> None:
        self.calls.append(f"batch_end {step}")

    def on_train_epoch_end(self, epoch: int) -> None:
        self.calls.append(f"epoch_end {epoch}")

    def on_fit_end(self, loader) -> None:
        self.calls.append("fit_end")

    def finalize(self) -> None:
        self.calls.append("finalize")
        self.mark_fitted()

    def compute(self, images):
        score = (images.mean(dim=(2, 3)) @ self.weight - 1).abs()
        return score, None


def test_hooks_are_called_in_order_and_the_plan_reaches_configure_optimizers() -> None:
    model = Linear()
    GradientTrainer(device="cpu", num_epochs=2, progress=False).fit(model, batches(3))
    assert model.calls == ["fit_start", "configure",
                           "epoch_start 0", "step", "batch_end 1", "step", "batch_end 2", "step", "batch_end 3",
                           "epoch_end 1",
                           "epoch_start 1", "step", "batch_end 4", "step", "batch_end 5", "step", "batch_end 6",
                           "epoch_end 2", "fit_end", "finalize"]
    (plan,) = model.plans
    assert (plan.total_steps, plan.steps_per_epoch, plan.num_epochs, plan.max_steps) == (6, 3, 2, None)
    model = Linear()
    GradientTrainer(device="cpu", max_steps=5, accumulate_grad_batches=2, progress=False).fit(model, batches(3))
    assert (model.plans[0].total_steps, model.plans[0].steps_per_epoch) == (5, 2)


def test_bf16_on_the_cpu_trains_under_autocast() -> None:
    seen = []

    class Watching(Linear):
        def training_step(self, batch, ctx):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return super().training_step(batch, ctx)

    model = Watching()
    GradientTrainer(device="cpu", num_epochs=1, precision="bf16", progress=False).fit(model, batches(2))
    assert seen == [torch.bfloat16] * 2
    assert bool(torch.isfinite(model.weight).all()) and bool((model.weight != 0).all())


def test_ema_weights_differ_from_the_raw_ones_and_are_what_predict_uses() -> None:
    seed_everything(0)
    raw = Linear(lr=0.5)
    GradientTrainer(device="cpu", num_epochs=2, progress=False).fit(raw, batches())
    seed_everything(0)
    averaged = Linear(lr=0.5)
    GradientTrainer(device="cpu", num_epochs=2, ema_decay=0.5, progress=False).fit(averaged, batches())
    assert not torch.allclose(raw.weight, averaged.weight)
    # The average lags behind the raw weights, which started at 0 and grow towards the target.
    assert float(averaged.weight.detach().abs().sum()) < float(raw.weight.detach().abs().sum())
    images = batches(1, seed=3)[0].image
    expected = (images.mean(dim=(2, 3)) @ averaged.weight.detach() - 1).abs()
    assert torch.allclose(averaged.predict(images).score, expected)


class Deterministic(Linear):
    def training_step(self, batch, ctx):
        return (batch.image.mean(dim=(2, 3)) @ self.weight - 1).pow(2).mean()


def test_accumulation_equals_a_larger_batch() -> None:
    small, large = batches(4), batches(4)
    merged = [Batch(torch.cat([a.image, b.image]), torch.cat([a.label, b.label]), None, a.path + b.path,
                    a.category + b.category) for a, b in zip(large[::2], large[1::2])]
    accumulated, single = Deterministic(momentum=0.9), Deterministic(momentum=0.9)
    GradientTrainer(device="cpu", num_epochs=3, accumulate_grad_batches=2, progress=False).fit(accumulated, small)
    GradientTrainer(device="cpu", num_epochs=3, progress=False).fit(single, merged)
    assert not torch.equal(single.weight, torch.zeros(3))
    torch.testing.assert_close(accumulated.weight, single.weight, rtol=1e-5, atol=1e-6)


class TwoOptimisers(AnomalyModel):
    """A GAN-like alternation: each batch steps the generator, then the critic, in manual mode."""

    automatic_optimization = False

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.nn.Linear(3, 3)
        self.critic = torch.nn.Linear(3, 1)
        self.steps = [0, 0]

    def configure_optimizers(self, plan):
        g = torch.optim.Adam(self.generator.parameters(), lr=1e-2)
        c = torch.optim.Adam(self.critic.parameters(), lr=1e-2)
        return [{"optimizer": g, "scheduler": torch.optim.lr_scheduler.StepLR(g, 1, 0.5), "interval": "epoch"},
                {"optimizer": c}]

    def training_step(self, batch, ctx):
        x = batch.image.mean(dim=(2, 3))
        g, c = ctx.optimizers
        for i, (optimizer, loss_of) in enumerate(((g, lambda: self.critic(self.generator(x)).mean()),
                                                  (c, lambda: (self.critic(x) - 1).pow(2).mean()))):
            optimizer.zero_grad()
            loss = loss_of()
            ctx.backward(loss)
            ctx.clip(self.parameters())
            ctx.step_optimizer(optimizer)
            self.steps[i] += 1
        return loss.detach()

    def compute(self, images):
        return self.critic(images.mean(dim=(2, 3)))[:, 0], None


def test_two_optimisers_in_manual_mode_both_step_and_resume_restores_both(tmp_path) -> None:
    seed_everything(0)
    model = TwoOptimisers()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = GradientTrainer(device="cpu", num_epochs=2, checkpoint_dir=tmp_path, progress=False)
    report = trainer.fit(model, batches())
    assert model.steps == [8, 8] and report.steps == 8
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    seed_everything(0)
    again = TwoOptimisers()
    resumed = GradientTrainer(device="cpu", num_epochs=2, checkpoint_dir=tmp_path, resume=True, progress=False)
    optimizers = []
    configure = again.configure_optimizers
    again.configure_optimizers = lambda plan: optimizers.extend(configure(plan)) or optimizers
    resumed.fit(again, batches())
    assert again.steps == [0, 0]  # the saved state was complete
    g, c = (entry["optimizer"] for entry in optimizers)
    assert g.state_dict()["state"][0]["step"] == 8 and c.state_dict()["state"][0]["step"] == 8
    assert optimizers[0]["scheduler"].last_epoch == 2
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


# -- exact resume, refusal, divergence, on a shuffled DataLoader ---------------------------------------------
def loader(seed: int = 7) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    samples = [Sample(torch.rand(3, 8, 8, generator=g), 0, None, f"{i}.png", "c") for i in range(10)]
    return DataLoader(samples, batch_size=3, shuffle=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


class Killed(RuntimeError):
    pass


class Dropping(Linear):
    """Draws from torch, numpy and python generators at every step; `kill_at` stops the run there."""

    kill_at = -1

    def training_step(self, batch, ctx):
        import random

        import numpy as np

        noise = torch.rand(3) * float(np.random.rand()) * random.random()
        return ((batch.image.mean(dim=(2, 3)) + noise) @ self.weight - 1).pow(2).mean()

    def on_train_batch_end(self, step: int) -> None:
        if step == self.kill_at:
            raise Killed


def run(folder, kill_at: int = -1, resume: bool = False, **options):
    seed_everything(0)
    model = Dropping(momentum=0.9)
    model.kill_at = kill_at
    data = loader(options.pop("loader_seed", 7))
    settings = {"num_epochs": 3, "checkpoint_every": 2, "ema_decay": 0.9, "config": {"seed": 0, "lr": model.lr},
                **options}
    trainer = GradientTrainer(device="cpu", checkpoint_dir=folder, resume=resume, progress=False, **settings)
    report = trainer.fit(model, data, generator=data.generator)
    return model, report


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path) -> None:
    straight, full = run(tmp_path / "straight")
    with pytest.raises(Killed):
        run(tmp_path / "killed", kill_at=7)  # mid-epoch (4 batches per epoch); the state of step 6 was saved
    assert read_training_meta(tmp_path / "killed")["step"] == 6
    resumed, report = run(tmp_path / "killed", resume=True)
    assert report.extra["resumed_from_step"] == 6 and report.steps == full.steps == 12
    assert report.history == full.history
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_every_saves_the_state_every_n_steps(tmp_path) -> None:
    with pytest.raises(Killed):
        run(tmp_path, kill_at=3, checkpoint_every=1)
    assert read_training_meta(tmp_path)["step"] == 2  # saved at step 2 although no epoch had ended


@pytest.mark.parametrize(("change", "named"), [
    ({"config": {"seed": 1, "lr": 0.1}}, "config.seed: saved 0, this run 1"),
    ({"num_epochs": 4}, "num_epochs: saved 3, this run 4"),
    ({"ema_decay": 0.5}, "trainer.ema_decay: saved 0.9, this run 0.5"),
])
def test_a_resume_with_other_settings_is_refused_naming_what_differs(tmp_path, change, named) -> None:
    run(tmp_path)
    with pytest.raises(TrainingStateError, match=named.replace(".", r"\.")):
        run(tmp_path, resume=True, **change)


class Exploding(Deterministic):
    """Its loss stays finite while a normalisation buffer becomes infinite in epoch 2."""

    def on_train_batch_end(self, step: int) -> None:
        if step == 5:
            self.scale.fill_(float("inf"))

    def training_step(self, batch, ctx):
        return super().training_step(batch, ctx)


def test_divergence_in_a_buffer_is_found_at_its_epoch_and_never_saved(tmp_path) -> None:
    trainer = GradientTrainer(device="cpu", num_epochs=3, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(NonFiniteLossError, match="scale of Exploding became NaN or infinite after epoch 2"):
        trainer.fit(Exploding(), batches())
    assert read_training_meta(tmp_path)["epoch"] == 1  # the last finite state, not the diverged one
