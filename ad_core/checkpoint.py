"""Checkpoints as `model.safetensors` + `model.json` (DESIGN §6); nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ad_core import __version__
from ad_core.detector import Detector
from ad_core.io import atomic_path, write_json
from ad_core.preprocessing import PreProcessor

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or belongs to another model."""


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks: identifies the exact weights a run or an ensemble used."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Accepts the run folder, `model.json` or `model.safetensors`; returns (folder, metadata)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    meta_path = directory / META_NAME
    if not meta_path.is_file():
        raise CheckpointError(f"no {META_NAME} in {directory}: expected a folder written by ad-core "
                              f"(with {WEIGHTS_NAME} and {META_NAME})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from exc
    if "model" not in meta or "hyperparameters" not in meta:
        raise CheckpointError(f"{meta_path} lacks 'model' or 'hyperparameters': not an ad-core checkpoint")
    return directory, meta


def load_model(path: str | Path, expected_model: str | None = None, device: str | torch.device = "cpu") -> Detector:
    """Rebuild the exact trained detector from a checkpoint folder (predictions identical).

    An ensemble folder (written by `ad_core.build_ensemble`) loads as one detector too.
    """
    from ad_core.building import build_model
    from ad_core.ensemble.storage import is_ensemble, load_ensemble

    if is_ensemble(path):
        if expected_model not in (None, "ensemble"):
            raise CheckpointError(f"{path} holds an ensemble, not {expected_model!r}")
        return load_ensemble(path, device=device)
    directory, meta = read_meta(path)
    if expected_model is not None and expected_model not in (meta["model"], meta.get("base_model")):
        raise CheckpointError(
            f"{directory} holds a {meta['model']!r} checkpoint, not {expected_model!r}"
        )
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is damaged or not a safetensors file: {exc}") from exc
    hparams = dict(meta["hyperparameters"])
    if "pretrained" in hparams:
        hparams["pretrained"] = False  # the backbone's weights are in the checkpoint itself
    model, _ = build_model(meta["model"], **hparams)
    pre = PreProcessor.from_run({**meta.get("run", {}), "normalize": bool(meta.get("normalize", True))})
    detector = Detector(model, pre=pre)
    try:
        detector.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights} does not fit model {meta['model']!r} built from {directory / META_NAME}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    detector.meta = meta
    return detector.to(device).eval()

