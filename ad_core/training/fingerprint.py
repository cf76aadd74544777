"""Which of a run's settings a resumed run must share with the saved one."""

from __future__ import annotations

from typing import Any

from ad_core.building import ModelConfig

# Run keys that change where or how fast a run goes, or what is done after training, not what it learns.
NOT_FINGERPRINTED = frozenset({"device", "resume", "checkpoint_every", "num_workers", "eval_batch_size",
                               "threshold_method", "k_sigma", "backbone_dir", "weights_file", "allow_download",
                               "on_missing_weights"})


def fingerprinted_config(config: ModelConfig, seed: int) -> dict[str, Any]:
    """The resolved configuration stored with a training state: model, hyperparameters, run settings, seed."""
    run = {k: v for k, v in config.run.items() if k not in NOT_FINGERPRINTED}
    return {"model": config.name, "hyperparameters": dict(config.hyperparameters), "run": run, "seed": seed}
