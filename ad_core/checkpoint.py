"""Checkpoints as `model.safetensors` + `model.json` (DESIGN §6); nothing is ever unpickled."""

from __future__ import annotations

import importlib
import inspect
import json
import platform
from importlib import metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ad_core import __version__
from ad_core.detector import Detector
from ad_core.io import atomic_path, file_sha256, write_json
from ad_core.preprocessing import PreProcessor
from ad_core.run_folder import MANIFEST_NAME, read_manifest

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or belongs to another model."""


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def save_checkpoint(detector: Detector, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically; returns the directory.

    `meta` needs at least `model` (the registered name or variant) and `hyperparameters`.
    """
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    weights = directory / WEIGHTS_NAME
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "ad-core", "model": str(meta.get("model", ""))})
    info = {
        "format_version": FORMAT_VERSION,
        "pretrained": _pretrained(str(meta.get("model", "")), meta.get("hyperparameters", {})),
        **meta,
        "weights_sha256": file_sha256(weights),
        "versions": {
            "ad-core": __version__,
            "plugin": {meta.get("plugin", ""): _dist_version(meta.get("plugin", "")) if meta.get("plugin") else None},
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    write_json(directory / META_NAME, info)
    return directory


# Folder kinds: a folder is described by one JSON file whose "kind" names how it loads. The core loads its own
# kind ("model", described by model.json); a layer above the kernel registers its kind with `register_loader`
# when imported (the ensemble registers "ensemble", described by ensemble.json). The kernel imports none of them:
# `KIND_PROVIDERS` names, as strings, the modules it imports on the first load to let them register.
MODEL_KIND = "model"
Loader = Callable[[Path, "str | torch.device"], Detector]
_LOADERS: dict[str, tuple[str, Loader]] = {}
KIND_PROVIDERS: list[str] = ["ad_core.ensemble.storage"]


def register_loader(kind: str, descriptor: str, loader: Loader) -> None:
    """Let folders whose `descriptor` JSON file says `"kind": kind` load through `loader(path, device)`."""
    if kind == MODEL_KIND:
        raise ValueError(f"the {MODEL_KIND!r} kind is the core's own")
    _LOADERS[kind] = (descriptor, loader)


def folder_kind(path: str | Path) -> str:
    """The kind of folder `path` (the folder or its descriptor file) is: "model" or a registered kind."""
    for module in KIND_PROVIDERS:
        importlib.import_module(module)
    path = Path(path)
    for kind, (descriptor, _) in _LOADERS.items():
        if (path / descriptor).is_file() if path.is_dir() else path.name == descriptor and path.is_file():
            return kind
    return MODEL_KIND


def _takes_pretrained(model: str) -> inspect.Parameter | None:
    """The model factory's `pretrained` parameter, if it has one."""
    from ad_core.plugins import get_registry

    spec, _ = get_registry().resolve(model)
    return inspect.signature(spec.load_factory()).parameters.get("pretrained")


def _pretrained(model: str, hyperparameters: dict[str, Any]) -> bool | None:
    """Whether the backbone started from pretrained weights (recorded; loading never needs them)."""
    if "pretrained" in hyperparameters:
        return bool(hyperparameters["pretrained"])
    param = _takes_pretrained(model) if model else None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return bool(param.default)


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Accepts the run folder, `model.json` or `model.safetensors`; returns (folder, metadata)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    meta_path = directory / META_NAME
    if not meta_path.is_file():
        raise CheckpointError(f"no {META_NAME} in {directory}: expected a folder written by ad-core "
                              f"(with {WEIGHTS_NAME} and {META_NAME})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                              "the file is damaged or not an ad-core model.json") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} holds no JSON object: not an ad-core checkpoint")
    if "model" not in meta or "hyperparameters" not in meta:
        raise CheckpointError(f"{meta_path} lacks 'model' or 'hyperparameters': not an ad-core checkpoint")
    return directory, meta


def verify_checkpoint(directory: Path, meta: dict[str, Any]) -> Path:
    """Check the weights against the SHA-256 in `model.json` and, for a run folder, the set against its manifest.

    Returns the weights file. Raises `CheckpointError` naming the file that is missing, altered or mismatched.
    """
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    digests = {META_NAME: file_sha256(directory / META_NAME), WEIGHTS_NAME: file_sha256(weights)}
    run_id, manifest = meta.get("run_id"), read_manifest(directory)
    if run_id is not None or manifest is not None:  # a run folder: the set must be the one its manifest binds
        if not manifest or manifest.get("run_id") != run_id:
            raise CheckpointError(
                f"{directory} is an inconsistent run folder: its {MANIFEST_NAME} is missing or belongs to another "
                f"run than {META_NAME} (a run was interrupted while writing it). Train again into this folder."
            )
        for name, digest in digests.items():
            if manifest.get("files", {}).get(name) != digest:
                raise CheckpointError(f"{directory / name} was modified after the run wrote it (its SHA-256 "
                                      f"differs from {directory / MANIFEST_NAME}); refusing to load it")
    expected = meta.get("weights_sha256")
    if expected is not None and digests[WEIGHTS_NAME] != expected:
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in {directory / META_NAME}: the "
                              "weights were modified or belong to another run; refusing to load them")
    return weights


def _check_shapes(state: dict[str, torch.Tensor], detector: Detector, weights: Path, model: str) -> None:
    """Name the first tensor the model built from `model.json` lacks or holds in another shape. Tensors the file
    lacks are left to `load_state_dict`: a module may complete them (buffers added after the file was written)."""
    own = detector.state_dict()
    for key, tensor in state.items():
        if key not in own:
            raise CheckpointError(f"{weights} holds tensor {key!r}, which model {model!r} does not have")
        if own[key].numel() and tuple(own[key].shape) != tuple(tensor.shape):  # empty: data-sized, takes the file's
            raise CheckpointError(f"{weights}: tensor {key!r} has shape {tuple(tensor.shape)} in the file but "
                                  f"{tuple(own[key].shape)} in model {model!r} built from {META_NAME}")


def load_model(path: str | Path, expected_model: str | None = None, device: str | torch.device = "cpu",
               category: str | None = None) -> Detector:
    """Rebuild the exact trained detector from a checkpoint folder (predictions identical).

    A folder of another registered kind (an ensemble written by `ad_core.build_ensemble`) loads as one detector
    too, through the loader its layer registered. `category` makes a unified run's detector decide with that
    category's own thresholds (`ad_core.unified.use_category`); without it, with those chosen on the union.
    """
    detector = _load_detector(path, expected_model, device)
    if category is not None:
        from ad_core.unified import use_category

        use_category(detector, category)
    return detector


def _load_detector(path: str | Path, expected_model: str | None, device: str | torch.device) -> Detector:
    from ad_core.building import build_model

    kind = folder_kind(path)
    if kind != MODEL_KIND:
        if expected_model not in (None, kind):
            raise CheckpointError(f"{path} holds an {kind}, not {expected_model!r}")
        return _LOADERS[kind][1](path, device)
    directory, meta = read_meta(path)
    if expected_model is not None and expected_model not in (meta["model"], meta.get("base_model")):
        raise CheckpointError(
            f"{directory} holds a {meta['model']!r} checkpoint, not {expected_model!r}"
        )
    weights = verify_checkpoint(directory, meta)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is damaged or not a safetensors file: {exc}") from exc
    hparams = dict(meta["hyperparameters"])
    if "pretrained" in hparams or _takes_pretrained(meta["model"]) is not None:
        hparams["pretrained"] = False  # the backbone's weights are in the checkpoint itself
    model, _ = build_model(meta["model"], **hparams)
    pre = PreProcessor.from_run({**meta.get("run", {}), "normalize": bool(meta.get("normalize", True))})
    detector = Detector(model, pre=pre)
    _check_shapes(state, detector, weights, meta["model"])
    try:
        detector.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit model {meta['model']!r} built from {directory / META_NAME}: "
                              f"{' '.join(str(exc).split())[:400]}") from exc
    detector.meta = meta
    return detector.to(device).eval()

