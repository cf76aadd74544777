"""`model.json` of an export folder: what a runtime needs to feed the graph and read its outputs, and the
parity figures measured when it was written (the export folder contract, format "ad-core-export")."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from ad_core import __version__
from ad_core.detector import Detector

FORMAT = "ad-core-export"
FORMAT_VERSION = 1
META_NAME = "model.json"
ONNX_NAME = "model.onnx"
OPENVINO_NAME = "model.xml"
# How a runtime must decode and resize images: as training did (`ad_core.data.transforms`).
INPUT_RESIZE = {"library": "Pillow", "filter": "bilinear", "reducing_gap": None}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _finite_or_none(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


def _model_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """The model's name and what it was built with: its variant and settings, or an ensemble's members."""
    if meta.get("kind") == "ensemble":
        return {"model": "ensemble", "settings": {"fusion": meta.get("fusion"),
                                                  "members": [m.get("name") for m in meta.get("members", [])]}}
    fields: dict[str, Any] = {"model": meta.get("base_model", meta["model"]),
                              "settings": {**meta.get("hyperparameters", {}), **meta.get("run", {})}}
    if meta["model"] != fields["model"]:
        fields["variant"] = meta["model"]
    return fields


def export_metadata(detector: Detector, outputs: tuple[str, ...], batch: int | str, precision: str, opset: int,
                    parity: dict[str, Any], openvino: bool) -> dict[str, Any]:
    """The export's `model.json` (see the module docstring)."""
    post = detector.post
    height, width = detector.image_size
    versions = {"ad-core": __version__, "torch": _version("torch"), "onnx": _version("onnx"),
                "onnxruntime": _version("onnxruntime")}
    if openvino:
        versions["openvino"] = _version("openvino")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_model_fields(detector.meta),
        "input": {"height": height, "width": width, "channels": 3, "layout": "NCHW", "range": [0, 1],
                  "color": "RGB", "resize": INPUT_RESIZE},
        "batch": batch,
        "outputs": list(outputs),
        "has_map": "anomaly_map" in outputs,
        "thresholds": {"image": float(post.threshold), "pixel": _finite_or_none(float(post.pixel_threshold))},
        "normalization": {
            "rule": "clamp((value - threshold) / (max - min) + 0.5, 0, 1)",
            "score": {"min": float(post.score_min), "max": float(post.score_max)},
            "map": {"min": float(post.map_min), "max": float(post.map_max)} if post.pixel_calibrated else None,
        },
        "opset": opset,
        "precision": precision,
        "versions": versions,
        "files": {"onnx": ONNX_NAME, **({"openvino": OPENVINO_NAME} if openvino else {})},
        "parity": parity,
    }


def read_export_metadata(directory: str | Path) -> dict[str, Any]:
    """An export folder's `model.json`, refused with a clear error if it is of another format or a newer version."""
    path = Path(directory) / META_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read as an export's model.json: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} is not an ad-core export (format {found!r}, expected {FORMAT!r}): "
                         "export a run folder with `adcore export RUN_DIR`")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this ad-core reads up to {FORMAT_VERSION}: "
                         "upgrade ad-core, or export again with this version")
    return meta
