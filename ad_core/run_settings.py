"""The settings a run reads itself (seed, device, outputs, validation source, threshold rate), taken out of the
overrides before the rest reach the model, so that a per-category run and a unified run read them alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ad_core.metrics.evaluate import DEFAULT_TARGET_FPR
from ad_core.settings import resolve_device, settings
from ad_core.validation import DEFAULT_FRACTION


@dataclass
class RunnerSettings:
    """What `pop_runner_settings` took out of a run's overrides."""

    seed: int
    device: torch.device
    write_maps: bool
    source: dict[str, Any]  # validation_split's keywords: source, folder, fraction
    target_fpr: float
    masks: dict[str, Any]  # get_dataset's keywords for the test split


def pop_runner_settings(overrides: dict[str, Any]) -> RunnerSettings:
    """Remove the runner's own settings from `overrides` (in place) and return them, defaults filled in."""
    return RunnerSettings(
        seed=int(overrides.pop("seed", settings.seed)),
        device=resolve_device(overrides.pop("device", None)),
        write_maps=bool(overrides.pop("write_maps", True)),
        source={"source": overrides.pop("validation", "holdout"), "folder": overrides.pop("validation_dir", None),
                "fraction": float(overrides.pop("validation_fraction", DEFAULT_FRACTION))},
        target_fpr=float(overrides.pop("target_fpr", DEFAULT_TARGET_FPR)),
        masks={} if overrides.pop("require_masks", True) else {"require_masks": False},
    )
