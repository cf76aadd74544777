"""The trainer's options as one typed value, and the plan of a fit that `configure_optimizers` receives."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ad_core.settings import resolve_device, settings
from ad_core.training.distributed import World

PRECISIONS = ("32", "bf16", "16")


@dataclass(frozen=True)
class TrainerOptions:
    """Everything a trainer is told besides the model and the data.

    `config` is the resolved run configuration (model name, hyperparameters, run settings); it is fingerprinted
    in the saved training state so that a resume with other settings is refused.
    """

    device: str | torch.device | None = None
    num_epochs: int | None = None
    max_steps: int | None = None
    grad_clip: float | None = None
    early_stopping_patience: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    checkpoint_every: int | None = None
    precision: str = "32"
    ema_decay: float | None = None
    accumulate_grad_batches: int = 1
    progress: bool | None = None
    config: dict[str, Any] = field(default_factory=dict)
    world: World | None = None  # the torchrun processes this fit is one of (None: a single process)

    def __post_init__(self) -> None:
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, Path):
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        precision = str(self.precision)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "precision", precision)
        for name in ("num_epochs", "max_steps", "checkpoint_every", "accumulate_grad_batches"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.ema_decay is not None and not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

    @classmethod
    def of(cls, **settings: Any) -> TrainerOptions:
        """Build from keyword settings; an unknown one is an error that lists the valid ones."""
        valid = option_names()
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise TypeError(f"unknown trainer option(s) {unknown}; valid options: {sorted(valid)}")
        return cls(**settings)

    @classmethod
    def from_run(cls, run: dict[str, Any], **extra: Any) -> TrainerOptions:
        """The options a run's settings (`ModelConfig.run`) give, plus `extra` (device, checkpoint_dir ...)."""
        picked = {k: v for k, v in run.items() if k in RUN_OPTIONS and v is not None}
        return cls.of(**picked, **extra)


def resolve_trainer_options(options: TrainerOptions | None,
                            settings_: dict[str, Any]) -> tuple[TrainerOptions, torch.device, bool]:
    """A trainer's constructor arguments (a `TrainerOptions` or keyword options, not both) as the options, the
    device and whether to show progress (the global setting unless the options say)."""
    if options is not None and settings_:
        raise TypeError("pass either a TrainerOptions or keyword options, not both")
    options = options if options is not None else TrainerOptions.of(**settings_)
    device = options.device if isinstance(options.device, torch.device) else resolve_device(options.device)
    return options, device, settings.progress if options.progress is None else bool(options.progress)


def option_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(TrainerOptions))


# The run keys (`ad_core.specs.RUN_KEYS`) that are trainer options.
RUN_OPTIONS = frozenset({"num_epochs", "max_steps", "grad_clip", "early_stopping_patience", "resume",
                         "checkpoint_every", "precision", "ema_decay", "accumulate_grad_batches"})


@dataclass(frozen=True)
class TrainingPlan:
    """How long a fit runs, in optimiser steps, so schedules are sized from the run instead of the model.

    `steps_per_epoch` counts every batch of the loader (divided by `accumulate_grad_batches`); when a model skips
    batches (`training_step` returns None) and the run is counted in epochs, `total_steps` is an upper bound.
    """

    total_steps: int
    steps_per_epoch: int
    num_epochs: int | None
    max_steps: int | None

    @classmethod
    def of(cls, options: TrainerOptions, batches_per_epoch: int) -> TrainingPlan:
        per_epoch = math.ceil(batches_per_epoch / options.accumulate_grad_batches)
        epochs = options.num_epochs if options.num_epochs is not None or options.max_steps is not None else 1
        total = options.max_steps or 0
        if epochs is not None:
            total = min(total or math.inf, epochs * per_epoch)
        return cls(total_steps=int(total), steps_per_epoch=per_epoch, num_epochs=epochs, max_steps=options.max_steps)
