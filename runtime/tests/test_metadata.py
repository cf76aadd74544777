"""An export folder is checked before use: every defect is an `ExportError` that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ad_runtime import Detector, ExportError, read_export_info


def _rewrite(directory: Path, **changes) -> None:
    path = directory / "model.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def test_a_valid_export_is_read(make_export) -> None:
    info = read_export_info(make_export(height=24, width=32, batch=2))
    assert (info.model, info.height, info.width, info.batch, info.has_map) == ("brightness", 24, 32, 2, True)
    assert info.image_threshold == 0.5 and info.pixel_threshold == 0.4
    assert info.onnx_path.name == "model.onnx" and info.openvino_path is None


def test_dynamic_batch_reads_as_none(make_export) -> None:
    assert read_export_info(make_export(batch=None)).batch is None


@pytest.mark.parametrize("changes, message", [
    ({"format": "anomalib"}, "not an ad-core export"),
    ({"format_version": 2}, "newer than the 1 this ad-runtime reads"),
    ({"format_version": "1"}, "format_version"),
    ({"batch": 0}, "\"batch\" must be"),
    ({"outputs": ["score", "label"]}, "lacks normalized_score"),
    ({"outputs": ["score", "normalized_score", "label", "normalized_map"]}, "lacks anomaly_map"),
    ({"has_map": "yes"}, "'has_map' must be a bool"),
    ({"thresholds": {"image": None}}, "thresholds.image must be a finite number"),
    ({"files": {"onnx": "../model.onnx"}}, "inside the export folder"),
    ({"files": {"onnx": "other.onnx"}}, "does not exist"),
    ({"files": {"onnx": "model.onnx", "openvino": "model.xml"}}, "files.openvino"),
])
def test_a_bad_model_json_is_a_clear_error(make_export, changes, message) -> None:
    directory = make_export()
    _rewrite(directory, **changes)
    with pytest.raises(ExportError, match=message):
        read_export_info(directory)


@pytest.mark.parametrize("key, value", [("resize", {"library": "OpenCV", "filter": "linear", "reducing_gap": None}),
                                        ("resize", {"library": "Pillow", "filter": "bicubic", "reducing_gap": None}),
                                        ("color", "BGR"), ("range", [0, 255]), ("layout", "NHWC")])
def test_an_input_the_runtime_cannot_reproduce_is_refused(make_export, key, value) -> None:
    directory = make_export()
    info = json.loads((directory / "model.json").read_text())
    info["input"][key] = value
    (directory / "model.json").write_text(json.dumps(info))
    with pytest.raises(ExportError, match=f"input.{key}"):
        read_export_info(directory)


def test_missing_folder_file_and_broken_json(tmp_path, make_export) -> None:
    with pytest.raises(ExportError, match="not a folder"):
        read_export_info(tmp_path / "absent")
    with pytest.raises(ExportError, match="no model.json"):
        read_export_info(tmp_path)
    directory = make_export()
    (directory / "model.json").write_text("{not json")
    with pytest.raises(ExportError, match="cannot read"):
        read_export_info(directory)


def test_a_graph_that_disagrees_with_model_json_is_refused(make_export) -> None:
    directory = make_export(height=24, width=32, batch=2)
    _rewrite(directory, input={**json.loads((directory / "model.json").read_text())["input"], "height": 48})
    with pytest.raises(ExportError, match=r"shape \[2, 3, 24, 32\].*\[N, 3, 48, 32\]"):
        Detector.load(directory)
    _rewrite(directory, input={**json.loads((directory / "model.json").read_text())["input"], "height": 24},
             batch="dynamic")
    with pytest.raises(ExportError, match="has batch 2, but model.json says 'dynamic'"):
        Detector.load(directory)


def test_a_damaged_graph_is_a_clear_error(make_export) -> None:
    directory = make_export()
    (directory / "model.onnx").write_bytes(b"\x00not a graph")
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        Detector.load(directory)


def test_openvino_backend_without_ir_is_a_clear_error(make_export) -> None:
    with pytest.raises(ExportError, match="openvino"):
        Detector.load(make_export(), backend="openvino")
