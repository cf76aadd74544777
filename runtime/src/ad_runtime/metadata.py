"""Reading and checking an export folder's `model.json` before any graph is loaded.

An export folder is written by `adcore export`; its `model.json` says how the graph's input must be prepared
(size, colour, range, resize filter), what the graph returns and which files hold it. The runtime refuses a
folder it cannot reproduce exactly, with an error that says what is wrong, rather than scoring images wrongly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORT_FORMAT = "ad-core-export"
FORMAT_VERSION = 1  # the newest `format_version` this runtime reads
METADATA_FILE = "model.json"
IMAGE_OUTPUTS = ("score", "normalized_score", "label")
MAP_OUTPUT = "anomaly_map"
NORMALIZED_MAP_OUTPUT = "normalized_map"  # absent when the run has no pixel threshold (then no 0-1 map)
_RESIZE = {"library": "Pillow", "filter": "bilinear", "reducing_gap": None}  # what training does


class ExportError(ValueError):
    """An export folder that is missing, damaged, of another format or of a newer version."""


@dataclass(frozen=True)
class ExportInfo:
    """What the runtime needs from `model.json`; `raw` keeps the whole document (served by `GET /model`)."""

    directory: Path
    model: str
    height: int
    width: int
    batch: int | None  # None: the graph takes any batch size
    has_map: bool
    outputs: tuple[str, ...]
    image_threshold: float
    pixel_threshold: float | None
    onnx_path: Path
    openvino_path: Path | None
    raw: dict[str, Any]

    @property
    def has_normalized_map(self) -> bool:
        """Whether the graph returns the 0-1 map (it needs a pixel threshold, which old runs lack)."""
        return self.has_map and NORMALIZED_MAP_OUTPUT in self.outputs


def read_export_info(directory: str | Path) -> ExportInfo:
    """Parse and check `directory/model.json`; every problem is an `ExportError` naming the file and the fix."""
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a folder: give the folder `adcore export` wrote")
    if not path.is_file():
        raise ExportError(f"{directory} has no {METADATA_FILE}: it is not an export folder (write one with "
                          "`adcore export RUN_DIR`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExportError(f"{path} must hold a JSON object, found {type(raw).__name__}")
    _check_format(raw, path)
    height, width = _check_input(_field(raw, "input", dict, path), path)
    has_map = _field(raw, "has_map", bool, path)
    outputs = tuple(_field(raw, "outputs", list, path))
    needed = IMAGE_OUTPUTS + ((MAP_OUTPUT,) if has_map else ())
    missing = [name for name in needed if name not in outputs]
    if missing:
        raise ExportError(f"{path}: \"outputs\" lacks {', '.join(missing)} (has_map is {str(has_map).lower()})")
    thresholds = _field(raw, "thresholds", dict, path)
    files = _field(raw, "files", dict, path)
    return ExportInfo(
        directory=directory,
        model=str(_field(raw, "model", str, path)),
        height=height,
        width=width,
        batch=_check_batch(raw.get("batch"), path),
        has_map=has_map,
        outputs=outputs,
        image_threshold=_number(thresholds.get("image"), "thresholds.image", path),
        pixel_threshold=None if thresholds.get("pixel") is None else _number(thresholds["pixel"],
                                                                               "thresholds.pixel", path),
        onnx_path=_file(directory, files.get("onnx"), "onnx", path),
        openvino_path=None if files.get("openvino") is None else _file(directory, files["openvino"], "openvino",
                                                                       path),
        raw=raw,
    )


def _check_format(raw: dict[str, Any], path: Path) -> None:
    if raw.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} is not an ad-core export: \"format\" is {raw.get('format')!r}, "
                          f"expected {EXPORT_FORMAT!r}")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportError(f"{path}: \"format_version\" must be a whole number from 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise ExportError(f"{path} has format_version {version}, newer than the {FORMAT_VERSION} this ad-runtime "
                          "reads: upgrade ad-runtime to the version of the ad-core that exported it")


def _check_input(spec: dict[str, Any], path: Path) -> tuple[int, int]:
    height, width = spec.get("height"), spec.get("width")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ExportError(f"{path}: input.{name} must be a positive whole number, got {value!r}")
    expected = {"channels": 3, "layout": "NCHW", "color": "RGB", "range": [0, 1]}
    for key, want in expected.items():
        if spec.get(key) != want:
            raise ExportError(f"{path}: input.{key} is {spec.get(key)!r}; this runtime feeds {want!r} only")
    resize = spec.get("resize")
    if not isinstance(resize, dict) or any(resize.get(k, "absent") != v for k, v in _RESIZE.items()):
        raise ExportError(f"{path}: input.resize is {resize!r}; this runtime resizes as training does "
                          f"({_RESIZE}) and cannot reproduce another resize")
    return height, width


def _check_batch(batch: Any, path: Path) -> int | None:
    if batch == "dynamic":
        return None
    if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1:
        return batch
    raise ExportError(f"{path}: \"batch\" must be a positive whole number or \"dynamic\", got {batch!r}")


def _field(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in raw:
        raise ExportError(f"{path} lacks the field {key!r}: the export is incomplete, export the run again")
    value = raw[key]
    if not isinstance(value, kind):
        raise ExportError(f"{path}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _number(value: Any, name: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExportError(f"{path}: {name} must be a finite number, got {value!r}")
    return float(value)


def _file(directory: Path, name: Any, kind: str, path: Path) -> Path:
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ExportError(f"{path}: files.{kind} must name a file inside the export folder, got {name!r}")
    target = directory / name
    if not target.is_file():
        raise ExportError(f"{path} names files.{kind} = {name!r}, but {target} does not exist: copy the whole "
                          "export folder")
    return target
