"""The gradient trainer: epochs or steps, several optimisers and schedulers, automatic or manual optimisation,
mixed precision, EMA of the weights, gradient accumulation, clipping, a divergence guard, early stopping on a
validation metric, exact checkpoint + resume, and a progress bar.

The model's side (declared by `ad_core.protocols.TrainableModel`, defaults in `ad_core.model.AnomalyModel`),
in the order the trainer calls it:

- `on_fit_start(loader)`: a data pass before any gradient step (statistics, a held-out split ...); then
  `fit_fingerprint() -> dict` (facts of this fit a resume must share, e.g. the training images).
- `configure_optimizers(plan: TrainingPlan)`: `plan` has `total_steps`, `steps_per_epoch`, `num_epochs`,
  `max_steps` (optimiser steps). Returns an optimiser, a list of them, a dict `{"optimizer", "scheduler",
  "interval": "epoch"|"step"}` or a list of such dicts.
- per epoch: `on_train_epoch_start(epoch)`, then per batch `training_step(batch, ctx) -> loss | {"loss": ...} |
  None` (None: the batch is skipped, no step), `on_train_batch_end(step)` after each optimiser step, then
  `on_train_epoch_end(epoch)` (`epoch` counts finished epochs).
- `on_fit_end(loader)` then `finalize()` in eval mode (post-fit statistics; the default marks the model fitted),
  and `fit_notes() -> list[str]` for the report.

`automatic_optimization = True` (the default): the trainer zeroes the gradients, back-propagates the loss
(divided by `accumulate_grad_batches`), clips to `grad_clip` and steps every optimiser. With
`automatic_optimization = False` the model does it in `training_step` through `ctx` (`ctx.optimizers`,
`ctx.backward(loss)` (fp16-scaler aware), `ctx.clip(params)`, `ctx.step_optimizer(opt)`, `ctx.epoch`,
`ctx.step`) and returns its loss for the record: GAN alternation, fiber batches. Step-interval schedulers are
stepped by the trainer after each batch in both modes.

Options (`ad_core.training.options.TrainerOptions`, run keys of the same names): `num_epochs`, `max_steps`,
`grad_clip`, `early_stopping_patience`, `checkpoint_dir`, `resume`, `checkpoint_every` (optimiser steps; the
state is also saved at every epoch end), `precision` ("32", "bf16" or "16": autocast; fp16 uses a gradient
scaler and needs CUDA), `ema_decay` (an exponential average of the weights is what validation, `finalize` and
`predict` use, and is saved), `accumulate_grad_batches`, `device`, `progress`, `config` (the resolved run
configuration; a resume with another is refused), `world` (under torchrun: `ad_core.training.distributed`; each
process trains on its share of every batch, gradients are averaged before every optimiser step, in manual mode
too through `ctx.clip`/`ctx.step_optimizer`, and rank 0 alone saves the state).

Resume is exact: model, optimisers, schedulers, EMA, fp16 scaler, the torch/CUDA/Python/NumPy generators and the
data loader's shuffle generator (`fit(..., generator=loader.generator)`) and the model's own training-time
tensors outside its weights (`training_state()` / `load_training_state(state)`: a private generator, a running
maximum) are saved and restored, and a resumed
epoch skips the batches it had trained on. Parameters and buffers are checked for NaN/Inf after every epoch,
before every save and after `finalize`; a non-finite training state is never saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ad_core.protocols import TrainableModel
from ad_core.training.context import StepContext, unpack_optimizers
from ad_core.training.ema import WeightAverage
from ad_core.training.options import TrainerOptions, TrainingPlan, resolve_trainer_options
from ad_core.training.state import (
    SavedState,
    TrainingStateError,
    as_json,
    config_differences,
    read_training_state,
    save_training_state,
)
from ad_core.types import Batch, FitReport

TRAINER = "gradient"  # names the trainer in its saved state
MODEL_STATE = "model_state."  # prefix of the model's own training_state() tensors in the saved state


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss, a parameter or a buffer became NaN or infinite."""


ADVICE = "Lower the learning rate, enable grad_clip, or check the input images."


def _loss_of(output: Any) -> torch.Tensor:
    loss = output["loss"] if isinstance(output, dict) else output
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise TypeError("training_step must return a scalar tensor, a dict with a scalar 'loss', or None")
    return loss


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    """The NaN/Inf guard on the loss: stop with advice rather than train on garbage (`epoch`, `step` from 0)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: training diverged. {ADVICE}")


def check_finite_state(model: torch.nn.Module, where: str, ema: WeightAverage | None = None) -> None:
    """Every floating parameter and buffer (and the EMA copy) must be finite; else name the first that is not."""
    tensors = list(model.state_dict().items()) + [(f"EMA of {n}", t) for n, t in (ema.shadow if ema else {}).items()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteLossError(
                f"{name} of {type(model).__name__} became NaN or infinite {where}: training diverged (no "
                f"training state was saved from this point). {ADVICE}")


def validation_auroc(model: torch.nn.Module, val: Iterable[Batch], device: torch.device) -> float:
    """Image AUROC of the model on a labelled validation set (NaN when it has one class)."""
    from ad_core.metrics import auroc

    scores, labels = [], []
    for batch in val:  # numbers, not small tensors, outlive each batch (see `ad_core.evaluation.score_split`)
        scores.extend(model.predict(batch.image.to(device)).score.cpu().tolist())
        labels.extend(batch.label.tolist())
    s, y = np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(auroc(s, y))


@dataclass
class Progress:
    """Where training stands, saved with the state: so a resumed epoch's record is whole."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = -1
    stale: int = 0

    def add(self, loss: float, logged: dict[str, float]) -> None:
        self.batches += 1
        for key, value in {"loss": loss, **logged}.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def close_epoch(self) -> dict[str, float]:
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step,
                  **{k: v / max(self.batches, 1) for k, v in self.sums.items()}}
        self.batch_in_epoch, self.sums, self.batches = 0, {}, 0
        return record


class GradientTrainer:
    """Trains by back-propagation; see the module docstring for the hooks and options."""

    def __init__(self, options: TrainerOptions | None = None, **settings_: Any) -> None:
        self.options, self.device, self.progress = resolve_trainer_options(options, settings_)
        if self.options.precision == "16" and self.device.type != "cuda":
            raise ValueError(f"precision='16' (fp16) needs a CUDA device, this run trains on {self.device}: use "
                             "precision='bf16' or '32' on the CPU")

    # -- mixed precision ------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.options.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.options.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- state ----------------------------------------------------------------------------------
    def fingerprint(self, plan: TrainingPlan, model: TrainableModel) -> dict[str, Any]:
        """What a resumed run must share with the saved one."""
        o = self.options
        return as_json({"plan": asdict(plan), "config": o.config, "model": model.fit_fingerprint(),
                        "trainer": {"grad_clip": o.grad_clip, "precision": o.precision, "ema_decay": o.ema_decay,
                                    "accumulate_grad_batches": o.accumulate_grad_batches,
                                    "early_stopping_patience": o.early_stopping_patience}})

    def _check_saved(self, saved: SavedState, plan: TrainingPlan, model: TrainableModel) -> None:
        restart = f"Resume with the saved run's settings, or delete {saved.directory} to start over."
        meta = saved.meta
        if meta.get("trainer") != TRAINER or "fingerprint" not in meta:
            raise TrainingStateError(f"{saved.directory} holds a training state not written by the gradient "
                                     f"trainer. {restart}")
        differences = config_differences(meta["fingerprint"], self.fingerprint(plan, model))
        if differences:
            raise TrainingStateError(f"the training state in {saved.directory} was saved with other settings "
                                     f"({'; '.join(differences)}). {restart}")

    def _save(self, model, optimizers, ctx, progress: Progress, plan, ema, generator, epoch_start, best) -> None:
        world = self.options.world
        if self.options.checkpoint_dir is None or (world is not None and not world.is_main):
            return
        check_finite_state(model, f"at epoch {progress.epoch + 1}, step {progress.step}", ema)
        tensors = ema.tensors() if ema is not None else {}
        tensors.update({f"{MODEL_STATE}{k}": v for k, v in model.training_state().items()})
        if generator is not None:
            tensors["loader_generator"] = epoch_start if progress.batch_in_epoch else generator.get_state()
        if best is not None:
            tensors.update({f"best.{k}": v for k, v in best.items()})
        meta = {"trainer": TRAINER, "fingerprint": self.fingerprint(plan, model), **asdict(progress),
                "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None}
        save_training_state(self.options.checkpoint_dir, model, optimizers, [s.scheduler for s in ctx.schedulers],
                            meta, tensors)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, model: TrainableModel, train: Iterable[Batch], val: Iterable[Batch] | None = None, *,
            generator: torch.Generator | None = None) -> FitReport:
        """Train `model` on `train` (a sized iterable of batches). `generator` is the loader's shuffle
        generator, saved and restored with the state so a resumed run sees the same order."""
        o = self.options
        start = time.perf_counter()
        n_batches = len(train)  # type: ignore[arg-type]
        if n_batches == 0:
            raise ValueError("the training set is empty: at least one normal image is needed")
        model.to(self.device)
        plan = TrainingPlan.of(o, n_batches)
        model.on_fit_start(train)
        world = o.world
        if world is not None:
            world.broadcast_module(model)  # every process starts from rank 0's weights
        optimizers, schedulers = unpack_optimizers(model.configure_optimizers(plan))
        scaler = torch.amp.GradScaler("cuda") if o.precision == "16" else None
        ctx = StepContext(optimizers, schedulers, scaler, o.grad_clip, world=world)
        ema = WeightAverage(model, o.ema_decay) if o.ema_decay is not None else None
        progress, best, pending_rng, epoch_start = Progress(), None, None, None
        saved = read_training_state(o.checkpoint_dir) if o.resume else None
        if saved is not None:
            self._check_saved(saved, plan, model)
            saved.restore(model, optimizers, [s.scheduler for s in schedulers])
            extra = saved.extra
            model.load_training_state({k[len(MODEL_STATE):]: v for k, v in extra.items() if k.startswith(MODEL_STATE)})
            if ema is not None:
                ema.load(extra)
            if scaler is not None and saved.meta.get("scaler"):
                scaler.load_state_dict(saved.meta["scaler"])
            meta = saved.meta
            progress = Progress(**{k: meta[k] for k in Progress.__dataclass_fields__})
            best = {k[5:]: v.to(self.device) for k, v in extra.items() if k.startswith("best.")} or None
            if generator is not None and "loader_generator" in extra:
                epoch_start = extra["loader_generator"]
            pending_rng = saved
        resumed_from = progress.step if saved is not None else None
        automatic = bool(model.automatic_optimization)
        accumulate = o.accumulate_grad_batches
        n_epochs = plan.num_epochs if plan.num_epochs is not None else 10**9
        bar = tqdm(total=plan.total_steps, initial=progress.step, desc="training", unit="step",
                   disable=not self.progress or (world is not None and not world.is_main), leave=False)
        done = progress.step >= plan.total_steps
        while progress.epoch < n_epochs and not done:
            skip = progress.batch_in_epoch
            if pending_rng is not None and not skip:
                pending_rng.restore_rng()
                pending_rng = None
            if generator is not None:
                if epoch_start is not None:
                    generator.set_state(epoch_start)
                epoch_start = generator.get_state()
            model.on_train_epoch_start(progress.epoch)
            model.train()
            waiting = 0  # batches back-propagated since the last optimiser step
            for index, batch in enumerate(train):
                if index < skip:
                    continue
                if pending_rng is not None:
                    pending_rng.restore_rng()
                    pending_rng = None
                ctx.epoch, ctx.step, ctx.batch_in_epoch, ctx.logged = progress.epoch, progress.step, index, {}
                if automatic and waiting == 0:
                    for optimizer in optimizers:
                        optimizer.zero_grad(set_to_none=True)
                if world is not None:
                    ctx.grad_weight = len(batch) / world.sum_int(len(batch), self.device)
                with self._autocast():
                    output = model.training_step(batch.to(self.device), ctx)
                progress.batch_in_epoch = index + 1
                if output is None:
                    continue
                loss = _loss_of(output)
                seen = world.mean_scalar(loss) if world is not None else loss  # a NaN anywhere stops every rank
                check_finite(seen, progress.epoch, progress.step)
                progress.add(seen.item(), ctx.logged)
                if automatic:
                    ctx.backward(loss / accumulate if accumulate > 1 else loss)
                    waiting += 1
                    if waiting < accumulate and index + 1 < n_batches:
                        continue
                    waiting = 0
                    params = [p for group in (g for opt in optimizers for g in opt.param_groups)
                              for p in group["params"]]
                    ctx.sync_gradients(params)
                    if o.grad_clip:
                        if scaler is not None:
                            for optimizer in optimizers:
                                scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
                    for optimizer in optimizers:
                        ctx.step_optimizer(optimizer)
                if scaler is not None:
                    scaler.update()
                for entry in schedulers:
                    if entry.interval == "step":
                        entry.scheduler.step()
                progress.step += 1
                if ema is not None:
                    ema.update(model)
                model.on_train_batch_end(progress.step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}")
                if progress.step >= plan.total_steps:
                    done = True
                    break
                if o.checkpoint_every and progress.step % o.checkpoint_every == 0:
                    self._save(model, optimizers, ctx, progress, plan, ema, generator, epoch_start, best)
            if progress.batches == 0:
                raise ValueError("no training batch gave a loss: at least one normal image is needed")
            for entry in schedulers:
                if entry.interval == "epoch":
                    entry.scheduler.step()
            record = progress.close_epoch()
            check_finite_state(model, f"after epoch {progress.epoch}", ema)
            model.on_train_epoch_end(progress.epoch)
            stop = False
            if val is not None and o.early_stopping_patience is not None:
                with self._evaluated_weights(model, ema):
                    self._finish(model, None)
                    metric = validation_auroc(model, val, self.device)
                    if world is not None:  # one decision for every rank (batch-norm statistics differ per rank)
                        metric = float(world.mean_scalar(torch.tensor(metric, device=self.device)))
                    record["val_image_auroc"] = metric
                    if best is None or progress.best_metric is None or metric > progress.best_metric:
                        best = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        progress.best_metric, progress.best_epoch, progress.stale = metric, progress.epoch, 0
                    else:
                        progress.stale += 1
                stop = progress.stale >= o.early_stopping_patience
            progress.history.append(record)
            self._save(model, optimizers, ctx, progress, plan, ema, generator, epoch_start, best)
            if stop:
                break
        bar.close()
        if world is not None:
            world.average_buffers(model)
        if best is not None:
            model.load_state_dict(best)
        elif ema is not None:
            ema.swap(model)
        self._finish(model, train)
        check_finite_state(model, "after finalize")
        extra: dict[str, Any] = {"best_epoch": progress.best_epoch} if best is not None else {}
        if resumed_from is not None:
            extra["resumed_from_step"] = resumed_from
        notes = list(model.fit_notes())
        if world is not None:
            notes.append(f"trained by {world.size} processes (torchrun), each on its share of every batch, "
                         "gradients averaged before each step; batch-norm statistics averaged at the end")
        if resumed_from is not None:
            notes.append(f"resumed from step {resumed_from} of {plan.total_steps} ({o.checkpoint_dir})")
        return FitReport(seconds=time.perf_counter() - start, epochs=progress.epoch, steps=progress.step,
                         history=progress.history, extra=extra, notes=notes)

    @staticmethod
    @contextlib.contextmanager
    def _evaluated_weights(model: torch.nn.Module, ema: WeightAverage | None):
        """The EMA weights in the model for the duration (the raw ones back afterwards)."""
        if ema is not None:
            ema.swap(model)
        try:
            yield
        finally:
            if ema is not None:
                ema.swap(model)

    @staticmethod
    def _finish(model: TrainableModel, train: Iterable[Batch] | None) -> None:
        """`on_fit_end(loader)` (at the end of the fit only) and `finalize()` in eval mode."""
        model.eval()
        with torch.no_grad():
            if train is not None:
                model.on_fit_end(train)
            model.finalize()
