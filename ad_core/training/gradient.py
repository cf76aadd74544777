"""The gradient trainer: epochs or steps, optimisers and schedulers from the model, clipping,
a NaN/Inf guard, early stopping on a validation metric, checkpoint + resume, and a progress bar.

A model trains with it by providing `training_step(batch) -> loss` and `configure_optimizers()`,
which returns an optimiser, `(optimiser, scheduler)`, or `{"optimizer": ..., "scheduler": ..., "interval": "epoch"|"step"}`.
A model that takes several optimiser steps per batch (e.g. CFlow's fiber batches) sets `manual_optimization = True`:
it is then called as `training_step(batch, optimizer)`, steps the optimiser itself (and clips if it wants to)
and returns its loss for the record; everything else (epochs, schedulers, early stopping, resume) is unchanged.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ad_core.settings import resolve_device, settings
from ad_core.training.state import load_training_state, save_training_state
from ad_core.types import Batch, FitReport


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training cannot go on meaningfully."""


def _unpack_optimizers(conf: Any) -> tuple[torch.optim.Optimizer, Any, str]:
    if isinstance(conf, dict):
        return conf["optimizer"], conf.get("scheduler"), conf.get("interval", "epoch")
    if isinstance(conf, (tuple, list)):
        return conf[0], (conf[1] if len(conf) > 1 else None), "epoch"
    return conf, None, "epoch"


def _loss_of(output: Any) -> torch.Tensor:
    loss = output["loss"] if isinstance(output, dict) else output
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise TypeError("training_step must return a scalar tensor or a dict with a scalar 'loss'")
    return loss


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    """The NaN/Inf guard: stop with advice rather than train on garbage (`epoch`, `step` counted from 0)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: training diverged. "
            "Lower the learning rate, enable grad_clip, or check the input images."
        )


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


class GradientTrainer:
    """Trains by back-propagation; see the module docstring for what the model provides."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        num_epochs: int | None = None,
        max_steps: int | None = None,
        grad_clip: float | None = None,
        early_stopping_patience: int | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool | None = None,
        **_: object,
    ) -> None:
        if num_epochs is None and max_steps is None:
            num_epochs = 1
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.num_epochs = num_epochs
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        self.patience = early_stopping_patience
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.resume = resume
        self.progress = settings.progress if progress is None else progress

    # -- checkpoint and resume ------------------------------------------------------------------
    def _save_state(self, model, optimizer, scheduler, epoch: int, step: int, best: dict) -> None:
        if self.checkpoint_dir is None:
            return
        meta = {"epoch": epoch, "step": step, "best": {k: v for k, v in best.items() if k != "state"}}
        save_training_state(self.checkpoint_dir, model, optimizer, scheduler, meta)

    def _load_state(self, model, optimizer, scheduler) -> tuple[int, int]:
        meta = load_training_state(self.checkpoint_dir, model, optimizer, scheduler)
        return (0, 0) if meta is None else (int(meta["epoch"]), int(meta["step"]))

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, model: torch.nn.Module, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> FitReport:
        start = time.perf_counter()
        model.to(self.device)
        optimizer, scheduler, interval = _unpack_optimizers(model.configure_optimizers())
        manual = bool(getattr(model, "manual_optimization", False))
        epoch, step = self._load_state(model, optimizer, scheduler) if self.resume and self.checkpoint_dir else (0, 0)
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"metric": -float("inf"), "epoch": -1, "state": None}
        stale = 0
        n_epochs = self.num_epochs if self.num_epochs is not None else 10**9
        bar = tqdm(total=self.max_steps or n_epochs, initial=step if self.max_steps else epoch,
                   desc="training", unit="step" if self.max_steps else "epoch", disable=not self.progress, leave=False)
        done = self.max_steps is not None and step >= self.max_steps
        while epoch < n_epochs and not done:
            model.train()
            losses = []
            for batch in train:
                if manual:
                    loss = _loss_of(model.training_step(batch.to(self.device), optimizer))
                else:
                    loss = _loss_of(model.training_step(batch.to(self.device)))
                check_finite(loss, epoch, step)
                if not manual:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                    optimizer.step()
                if scheduler is not None and interval == "step":
                    scheduler.step()
                losses.append(loss.item())
                step += 1
                if self.max_steps:
                    bar.update(1)
                    if step >= self.max_steps:
                        done = True
                        break
            if not losses:
                raise ValueError("the training set is empty: at least one normal image is needed")
            epoch += 1
            if scheduler is not None and interval == "epoch":
                scheduler.step()
            record = {"epoch": epoch, "step": step, "loss": float(np.mean(losses))}
            if hasattr(model, "on_train_epoch_end"):
                model.on_train_epoch_end(epoch)
            if val is not None and self.patience is not None:
                self._finish(model)
                metric = validation_auroc(model, val, self.device)
                record["val_image_auroc"] = metric
                if metric > best["metric"] or best["state"] is None:
                    best = {"metric": metric, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
                    stale = 0
                else:
                    stale += 1
            history.append(record)
            if not self.max_steps:
                bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            self._save_state(model, optimizer, scheduler, epoch, step, best)
            if self.patience is not None and val is not None and stale >= self.patience:
                break
        bar.close()
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        self._finish(model)
        return FitReport(
            seconds=time.perf_counter() - start,
            epochs=epoch,
            steps=step,
            history=history,
            extra={"best_epoch": best["epoch"]} if best["state"] is not None else {},
        )

    @staticmethod
    def _finish(model: torch.nn.Module) -> None:
        """Let the model compute what it needs after training (e.g. normalisation statistics)."""
        model.eval()
        if hasattr(model, "finalize"):
            with torch.no_grad():
                model.finalize()
        elif hasattr(model, "mark_fitted"):
            model.mark_fitted()
