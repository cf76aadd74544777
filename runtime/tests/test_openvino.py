"""The optional OpenVINO backend scores as onnxruntime does (skipped where the openvino extra is not installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ad_runtime import Detector, ExportError

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'ad-runtime[openvino]'")


def _with_ir(directory: Path) -> Path:
    """Add the OpenVINO IR converted from the folder's ONNX graph, as `adcore export --format openvino` does."""
    ov.save_model(ov.convert_model(str(directory / "model.onnx")), str(directory / "model.xml"))
    info = json.loads((directory / "model.json").read_text())
    info["files"]["openvino"] = "model.xml"
    (directory / "model.json").write_text(json.dumps(info))
    return directory


@pytest.mark.parametrize("batch", [None, 2])
def test_openvino_gives_onnxruntimes_results(make_export, images, batch) -> None:
    directory = _with_ir(make_export(batch=batch))
    reference = Detector.load(directory).predict([images])
    results = Detector.load(directory, backend="openvino").predict([images])
    assert [r.label for r in results] == [r.label for r in reference]
    np.testing.assert_allclose([r.score for r in results], [r.score for r in reference], atol=1e-6)
    for ours, theirs in zip(results, reference):
        np.testing.assert_allclose(ours.normalized_map, theirs.normalized_map, atol=1e-6)


def test_an_ir_of_another_size_is_refused(make_export) -> None:
    directory = _with_ir(make_export(height=24, width=32))
    other = _with_ir(make_export(height=16, width=16))
    for name in ("model.xml", "model.bin"):  # the IR of another export copied over this one's
        (directory / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ExportError, match=r"model.xml takes images of shape \[None, 3, 16, 16\]"):
        Detector.load(directory, backend="openvino")
    (directory / "model.xml").write_text("<net>broken")
    with pytest.raises(ExportError, match="OpenVINO cannot load"):
        Detector.load(directory, backend="openvino")
