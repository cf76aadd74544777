"""A trainer's resumable state on disk: model, optimiser, scheduler and random generators, plus the trainer's
own counters (`meta`), so a run killed mid-training continues where it stopped instead of starting over.

Two files in the state folder, never pickle: `train_state.safetensors` (every tensor; the whole JSON record also
in its header, so one atomic file is the truth even if the run dies between the two writes) and
`train_state.json` (the same record, readable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ad_core.io import atomic_path, write_json

WEIGHTS_FILE = "train_state.safetensors"
META_FILE = "train_state.json"
_META_KEY = "train_state"
_RESERVED = ("param_groups", "optim_scalars", "scheduler")


class TrainingStateError(ValueError):
    """A saved training state cannot be resumed by this run (another model, other settings or other data)."""


def state_files(directory: str | Path) -> tuple[Path, Path]:
    """The tensors file and the readable record of a state folder."""
    directory = Path(directory)
    return directory / WEIGHTS_FILE, directory / META_FILE


def save_training_state(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, meta: dict[str, Any]) -> None:
    """Write the state atomically; `meta` is the trainer's JSON-able record (epoch, step, ...)."""
    clash = [key for key in _RESERVED if key in meta]
    if clash:
        raise ValueError(f"meta keys {clash} are reserved for the optimiser and scheduler state")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, slots in opt["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    record = {
        **meta,
        "param_groups": opt["param_groups"],
        "optim_scalars": {
            str(idx): {n: v for n, v in slots.items() if not isinstance(v, torch.Tensor)}
            for idx, slots in opt["state"].items()
        },
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    weights, info = state_files(directory)
    text = write_json(info, record).read_text()
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: text})


def _record(weights: Path, info: Path) -> dict[str, Any]:
    with safe_open(str(weights), framework="pt") as f:
        header = (f.metadata() or {}).get(_META_KEY)
    # A state written before the record moved into the header has only the JSON file.
    return json.loads(header if header is not None else info.read_text())


def read_training_meta(directory: str | Path | None) -> dict[str, Any] | None:
    """The trainer's saved record without touching any model, or None when nothing was saved."""
    if directory is None:
        return None
    weights, info = state_files(directory)
    if not weights.exists():
        return None
    return {k: v for k, v in _record(weights, info).items() if k not in _RESERVED}


def load_training_state(directory: str | Path | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any) -> dict[str, Any] | None:
    """Restore model, optimiser, scheduler and random generators in place; the saved `meta`, or None (and
    nothing touched) when the folder holds no state. A state of another model is a `TrainingStateError`."""
    if directory is None:
        return None
    weights, info = state_files(directory)
    if not weights.exists():
        return None
    tensors = load_file(str(weights))
    record = _record(weights, info)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as error:
        details = " ".join(str(error).split()).rstrip(".")
        raise TrainingStateError(
            f"the training state in {directory} was saved by another model or configuration, so it cannot be "
            f"resumed: {details}. Resume with the saved run's settings, or delete {directory} to start over."
        ) from error
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value  # the optimiser moves each to its parameter's device
    for idx, scalars in record["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    if scheduler is not None and record.get("scheduler") is not None:
        scheduler.load_state_dict(record["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return {k: v for k, v in record.items() if k not in _RESERVED}
