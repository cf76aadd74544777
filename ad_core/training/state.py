"""A trainer's resumable state on disk: model, every optimiser and scheduler, every random generator (torch,
CUDA, Python, NumPy and the data loader's shuffle generator), plus the trainer's own record (`meta`), so a run
killed mid-training continues exactly where it stopped instead of starting over.

Two files in the state folder, never pickle: `train_state.safetensors` (every tensor; the whole JSON record also
in its header, so one atomic file is the truth even if the run dies between the two writes) and
`train_state.json` (the same record, readable).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ad_core.io import atomic_path, write_json

WEIGHTS_FILE = "train_state.safetensors"
META_FILE = "train_state.json"
_META_KEY = "train_state"
_RESERVED = ("optimizers", "schedulers", "rng")


class TrainingStateError(ValueError):
    """A saved training state cannot be resumed by this run (another model, other settings or other data)."""


def state_files(directory: str | Path) -> tuple[Path, Path]:
    """The tensors file and the readable record of a state folder."""
    directory = Path(directory)
    return directory / WEIGHTS_FILE, directory / META_FILE


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def save_training_state(directory: str | Path, model: torch.nn.Module,
                        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                        schedulers: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write the state atomically. `meta` is the trainer's JSON-able record (epoch, step ...); `tensors` are
    the trainer's own extra tensors (EMA weights, the loader's generator ...), returned by `read_training_state`."""
    clash = [key for key in _RESERVED if key in meta]
    if clash:
        raise ValueError(f"meta keys {clash} are reserved for the optimiser, scheduler and random state")
    out = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()})
    optim_records = []
    for i, optimizer in enumerate(_as_list(optimizers)):
        opt = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, slots in opt["state"].items():
            for name, value in slots.items():
                if isinstance(value, torch.Tensor):
                    out[f"optim.{i}.{idx}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[name] = value
        optim_records.append({"param_groups": opt["param_groups"], "scalars": scalars})
    out["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = rng
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out["rng.numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    record = {
        **meta,
        "optimizers": optim_records,
        "schedulers": [s.state_dict() if s is not None else None for s in _as_list(schedulers)],
        "rng": {"python": [version, list(mt_state), gauss],
                "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]},
    }
    weights, info = state_files(directory)
    text = write_json(info, record).read_text()
    with atomic_path(weights) as tmp:
        save_file(out, str(tmp), metadata={_META_KEY: text})


@dataclass
class SavedState:
    """A state read from disk, not yet applied: its record and tensors."""

    directory: Path
    record: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in self.record.items() if k not in _RESERVED}

    @property
    def extra(self) -> dict[str, torch.Tensor]:
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("extra.")}

    def restore(self, model: torch.nn.Module, optimizers: Any, schedulers: Any) -> None:
        """Load model, optimisers and schedulers in place (random generators: `restore_rng`)."""
        try:
            model.load_state_dict({k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")})
        except RuntimeError as error:
            details = " ".join(str(error).split()).rstrip(".")
            raise TrainingStateError(
                f"the training state in {self.directory} was saved by another model or configuration, so it "
                f"cannot be resumed: {details}. Resume with the saved run's settings, or delete {self.directory} "
                "to start over."
            ) from error
        optimizers, schedulers = _as_list(optimizers), _as_list(schedulers)
        saved_opts, saved_scheds = self.record.get("optimizers", []), self.record.get("schedulers", [])
        if len(saved_opts) != len(optimizers) or len([s for s in saved_scheds if s is not None]) != len(schedulers):
            raise TrainingStateError(
                f"the training state in {self.directory} has {len(saved_opts)} optimiser(s) and "
                f"{len(saved_scheds)} scheduler(s), this model {len(optimizers)} and {len(schedulers)}. Resume "
                f"with the saved run's settings, or delete {self.directory} to start over.")
        for i, (optimizer, saved) in enumerate(zip(optimizers, saved_opts)):
            state: dict[int, dict[str, Any]] = {}
            prefix = f"optim.{i}."
            for key, value in self.tensors.items():
                if key.startswith(prefix):
                    idx, name = key[len(prefix):].split(".", 1)
                    state.setdefault(int(idx), {})[name] = value  # the optimiser moves each to its device
            for idx, scalars in saved["scalars"].items():
                state.setdefault(int(idx), {}).update(scalars)
            optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        for scheduler, saved in zip(schedulers, [s for s in saved_scheds if s is not None]):
            scheduler.load_state_dict(saved)

    def restore_rng(self) -> None:
        """Put torch, CUDA, Python and NumPy generators back where they were when the state was saved."""
        torch.set_rng_state(self.tensors["rng.torch"])
        cuda = [self.tensors[k] for k in sorted((k for k in self.tensors if k.startswith("rng.cuda.")),
                                                key=lambda k: int(k[9:]))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        rng = self.record.get("rng")
        if rng is None:
            return
        version, mt_state, gauss = rng["python"]
        random.setstate((version, tuple(mt_state), gauss))
        name, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, self.tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def _record(weights: Path, info: Path) -> dict[str, Any]:
    with safe_open(str(weights), framework="pt") as f:
        header = (f.metadata() or {}).get(_META_KEY)
    # A state written before the record moved into the header has only the JSON file.
    return json.loads(header if header is not None else info.read_text())


def read_training_state(directory: str | Path | None) -> SavedState | None:
    """The saved state of a folder, or None when nothing was saved there."""
    if directory is None:
        return None
    weights, info = state_files(directory)
    if not weights.exists():
        return None
    return SavedState(Path(directory), _record(weights, info), load_file(str(weights)))


def read_training_meta(directory: str | Path | None) -> dict[str, Any] | None:
    """The trainer's saved record without touching any model, or None when nothing was saved."""
    if directory is None:
        return None
    weights, info = state_files(directory)
    if not weights.exists():
        return None
    return {k: v for k, v in _record(weights, info).items() if k not in _RESERVED}


def load_training_state(directory: str | Path | None, model: torch.nn.Module, optimizers: Any,
                        schedulers: Any) -> dict[str, Any] | None:
    """Restore model, optimisers, schedulers and random generators in place; the saved `meta`, or None (and
    nothing touched) when the folder holds no state. A state of another model is a `TrainingStateError`."""
    saved = read_training_state(directory)
    if saved is None:
        return None
    saved.restore(model, optimizers, schedulers)
    saved.restore_rng()
    return saved.meta


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: saved → now` for every leaf that differs between two JSON records."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}: saved {a!r}, this run {b!r}")
    return out


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists, paths as strings), for comparing records."""
    return json.loads(json.dumps(value, default=str))
