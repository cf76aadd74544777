"""An ensemble on disk: `ensemble.json` (members by path and SHA-256, fusion rule, image size, thresholds)
and `ensemble.safetensors` (the members' normal statistics and the 0-1 score normalisation).

The members' weights are not copied: the ensemble names their checkpoint folders (relative to the ensemble
folder when they share a root, so the whole tree can move) and refuses to load when one changed or is gone.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ad_core import __version__
from ad_core.api import (
    WEIGHTS_NAME,
    CheckpointError,
    Detector,
    atomic_path,
    file_sha256,
    load_model,
    register_loader,
    write_json,
)
from ad_core.ensemble.cells import ENSEMBLE_NAME
from ad_core.ensemble.model import EnsembleModel
from ad_core.ensemble.normalization import NormalStats

FORMAT_VERSION = 1
STATS_NAME = "ensemble.safetensors"
MEMBERS_PREFIX = "model.members."


class EnsembleError(CheckpointError):
    """An ensemble cannot be loaded: a member is missing or its weights changed since it was built."""


def is_ensemble(path: str | Path) -> bool:
    path = Path(path)
    return (path / ENSEMBLE_NAME).is_file() if path.is_dir() else path.name == ENSEMBLE_NAME and path.is_file()


def member_reference(member_dir: Path, ensemble_dir: Path) -> str:
    """The member's folder relative to the ensemble folder when possible, else absolute."""
    try:
        return os.path.relpath(member_dir.resolve(), ensemble_dir.resolve())
    except ValueError:  # another drive on Windows
        return str(member_dir.resolve())


def save_ensemble(detector: Detector, directory: str | Path, member_dirs: list[Path],
                  meta: dict[str, Any]) -> dict[str, Any]:
    """Write the statistics and the spec atomically (the members' hashes are taken now); returns the spec."""
    directory = Path(directory)
    model: EnsembleModel = detector.model  # type: ignore[assignment]
    tensors = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()
               if not k.startswith(MEMBERS_PREFIX)}
    with atomic_path(directory / STATS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "ad-core-ensemble"})
    members = [
        {
            "name": member.meta.get("model", f"member{i}"),
            "path": member_reference(path, directory),
            "sha256": file_sha256(path / WEIGHTS_NAME),
            "image_size": member.meta.get("image_size"),
            "has_map": str(i) in model.map_stats,
        }
        for i, (member, path) in enumerate(zip(model.members, member_dirs))
    ]
    spec = {
        "format_version": FORMAT_VERSION,
        "kind": "ensemble",
        "model": "ensemble",
        **meta,
        "fusion": model.fusion,
        "normalize": False,
        "members": members,
        "versions": {"ad-core": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    write_json(directory / ENSEMBLE_NAME, spec)
    return spec


def _read_spec(directory: Path) -> dict[str, Any]:
    spec_path = directory / ENSEMBLE_NAME
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{spec_path} is not valid JSON ({exc})") from exc
    if spec.get("kind") != "ensemble" or not isinstance(spec.get("members"), list):
        raise EnsembleError(f"{spec_path} is not an ad-core ensemble spec (no 'kind': 'ensemble' or no members)")
    return spec


def _member_dir(entry: dict[str, Any], directory: Path, index: int) -> Path:
    """The member's folder, checked to exist and to hold the very weights the ensemble was built with."""
    path = Path(entry["path"])
    path = path if path.is_absolute() else directory / path
    weights = path / WEIGHTS_NAME
    name = entry.get("name", f"member {index}")
    if not weights.is_file():
        raise EnsembleError(
            f"ensemble member {index} ({name}) is missing: {weights} does not exist. Restore the member's "
            f"folder there, or rebuild the ensemble (adcore ensemble ...)"
        )
    digest = file_sha256(weights)
    if digest != entry.get("sha256"):
        raise EnsembleError(
            f"ensemble member {index} ({name}) changed since the ensemble was built: {weights} has SHA-256 "
            f"{digest[:12]}..., the ensemble expects {str(entry.get('sha256'))[:12]}... Its normal statistics and "
            f"threshold no longer hold: rebuild the ensemble (adcore ensemble ...)"
        )
    return path


def _stats(state: dict[str, torch.Tensor], prefix: str) -> NormalStats:
    return NormalStats(*(state[f"{prefix}.{name}"] for name in ("mean", "std", "knots", "positions")))


def load_ensemble(path: str | Path, device: str | torch.device = "cpu") -> Detector:
    """The ensemble as one detector (`predict`, `detect`, `meta`), members loaded and verified."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    spec = _read_spec(directory)
    member_dirs = [_member_dir(entry, directory, i) for i, entry in enumerate(spec["members"])]
    try:
        state = load_file(str(directory / STATS_NAME))
    except (SafetensorError, OSError) as exc:
        raise EnsembleError(f"{directory / STATS_NAME} is missing or damaged: {exc}") from exc
    members = [load_model(d, device=device) for d in member_dirs]
    n = len(members)
    try:
        score_stats = [_stats(state, f"model.score_stats.{i}") for i in range(n)]
        map_stats = {str(i): _stats(state, f"model.map_stats.{i}") for i in range(n) if spec["members"][i]["has_map"]}
    except KeyError as exc:
        raise EnsembleError(f"{directory / STATS_NAME} lacks {exc} for the members in {ENSEMBLE_NAME}") from exc
    model = EnsembleModel(members, [m.meta["image_size"] for m in members], score_stats, map_stats, spec["fusion"])
    detector = Detector(model, normalize=False)
    result = detector.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(MEMBERS_PREFIX)]
    if missing or result.unexpected_keys:
        raise EnsembleError(f"{directory / STATS_NAME} does not fit {ENSEMBLE_NAME}: missing {missing}, "
                            f"unexpected {result.unexpected_keys}")
    detector.meta = {**spec, "member_dirs": [str(d) for d in member_dirs]}
    return detector.to(device).eval()


register_loader("ensemble", ENSEMBLE_NAME, load_ensemble)
