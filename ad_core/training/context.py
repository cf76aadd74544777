"""What `training_step(batch, ctx)` receives: the optimisers and schedulers, scaler-aware backward, stepping
and clipping, and where training stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ad_core.training.distributed import World


@dataclass
class SchedulerEntry:
    """A scheduler and when the trainer steps it: after every optimiser step ("step") or epoch ("epoch")."""

    scheduler: Any
    interval: str = "epoch"


def unpack_optimizers(conf: Any) -> tuple[list[torch.optim.Optimizer], list[SchedulerEntry]]:
    """Read `configure_optimizers(plan)`'s answer: an optimiser, a list of them, a dict
    `{"optimizer", "scheduler", "interval"}` or a list of such dicts."""
    items = list(conf) if isinstance(conf, (list, tuple)) else [conf]
    optimizers, schedulers = [], []
    for item in items:
        if isinstance(item, dict):
            unknown = set(item) - {"optimizer", "scheduler", "interval"}
            if unknown or "optimizer" not in item:
                raise TypeError(f"configure_optimizers: a dict needs 'optimizer' and may have 'scheduler' and "
                                f"'interval', got keys {sorted(item)}")
            optimizer, scheduler, interval = item["optimizer"], item.get("scheduler"), item.get("interval", "epoch")
        else:
            optimizer, scheduler, interval = item, None, "epoch"
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"configure_optimizers must return an optimiser, a list of them, or dicts "
                            f"{{'optimizer', 'scheduler', 'interval'}}; got {type(optimizer).__name__}")
        if interval not in ("step", "epoch"):
            raise ValueError(f"a scheduler's interval is 'step' or 'epoch', got {interval!r}")
        optimizers.append(optimizer)
        if scheduler is not None:
            schedulers.append(SchedulerEntry(scheduler, interval))
    if not optimizers:
        raise TypeError("configure_optimizers returned no optimiser")
    return optimizers, schedulers


@dataclass
class StepContext:
    """Handed to every `training_step`. In manual mode (`automatic_optimization = False`) the model calls
    `zero_grad`, `backward`, `clip` and `step` itself; in automatic mode it only reads the counters."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[SchedulerEntry]
    scaler: torch.amp.GradScaler | None
    grad_clip: float | None
    epoch: int = 0  # epochs finished before this one
    step: int = 0  # optimiser steps taken so far (the trainer's counter)
    batch_in_epoch: int = 0
    logged: dict[str, float] = field(default_factory=dict)
    world: World | None = None  # set under torchrun: gradients are averaged over the processes before a step
    grad_weight: float = 1.0  # this process's share of the current global batch
    _synced: set[int] = field(default_factory=set)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The only optimiser (an error when there are several)."""
        if len(self.optimizers) != 1:
            raise ValueError(f"the model has {len(self.optimizers)} optimisers: use ctx.optimizers[i]")
        return self.optimizers[0]

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate, scaled when training in fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip(self, params: Iterable[torch.nn.Parameter], max_norm: float | None = None,
             optimizer: torch.optim.Optimizer | None = None) -> None:
        """Clip the gradient norm of `params` (to `max_norm`, else the run's `grad_clip`; nothing if neither).
        With fp16, name the `optimizer` the parameters belong to so their gradients are unscaled first."""
        params = list(params)
        self.sync_gradients(params)
        limit = max_norm if max_norm is not None else self.grad_clip
        if not limit:
            return
        if self.scaler is not None and optimizer is not None:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, limit)

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Under torchrun, average these parameters' gradients over the processes (once per optimiser step)."""
        if self.world is None:
            return
        todo = [p for p in params if id(p) not in self._synced]
        self.world.average_gradients(todo, self.grad_weight)
        self._synced.update(id(p) for p in todo)

    def step_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Step one optimiser (through the fp16 scaler when there is one)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.sync_gradients(params)
        self._synced.difference_update(id(p) for p in params)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def log(self, **values: float) -> None:
        """Extra figures for this step's record (averaged per epoch into the history)."""
        self.logged.update({k: float(v) for k, v in values.items()})
