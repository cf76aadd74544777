"""`ad_core.export` / `adcore export`: the export folder contract, parity at export time, and its errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ad_core
from ad_core.checkpoint import load_model
from ad_core.cli import main
from ad_core.exporting import ExportError, NotExportableError, export, read_export_metadata
from ad_core.exporting.parity import FP32_TOLERANCE
from ad_core.plugins import get_registry
from ad_core.specs import ModelSpec, SpecError

ort = pytest.importorskip("onnxruntime")

CATEGORY = "weave"
COMMON = {"pretrained": False, "verbose": False, "write_maps": False, "batch_size": 8, "backbone": "resnet18"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Tiny trained run folders: PaDiM, PatchCore and STFPM at 32 px, DFKDE (image scores only) at 40 px."""
    root = tmp_path_factory.mktemp("runs")
    ad_core.train("demo", CATEGORY, ["padim", "patchcore"], image_size=32, output_dir=root, **COMMON)
    ad_core.train("demo", CATEGORY, "stfpm", image_size=32, num_epochs=1, max_steps=2, output_dir=root, **COMMON)
    ad_core.train("demo", CATEGORY, "dfkde", image_size=40, output_dir=root, **COMMON)
    return root / "demo" / CATEGORY


def _graph_outputs(directory: Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": images.numpy()})))


def _test_images(size: int, count: int = 3) -> torch.Tensor:
    from ad_core.data import DemoDataset

    data = DemoDataset(category=CATEGORY, split="test", image_size=size, n_test_normal=2, n_test_anomalous=2, seed=5)
    return torch.stack([data[i].image for i in range(count)])


@pytest.mark.parametrize("model", ["padim", "patchcore", "stfpm"])
def test_export_folder_follows_the_contract_and_agrees_with_torch(runs, tmp_path, model) -> None:
    result = export(runs / model, tmp_path / "export", batch="dynamic")
    meta = read_export_metadata(result.directory)
    detector = load_model(runs / model)
    assert meta["format"] == "ad-core-export" and meta["format_version"] == 1 and meta["model"] == model
    assert meta["input"]["height"] == meta["input"]["width"] == 32 and meta["input"]["resize"]["filter"] == "bilinear"
    assert meta["outputs"] == ["score", "normalized_score", "label", "anomaly_map", "normalized_map"]
    assert meta["has_map"] and meta["batch"] == "dynamic" and meta["precision"] == "fp32"
    assert meta["thresholds"]["image"] == pytest.approx(float(detector.post.threshold))
    assert meta["thresholds"]["pixel"] == pytest.approx(float(detector.post.pixel_threshold))
    assert meta["parity"]["source"] == "test images" and meta["parity"]["images"] == 8
    assert meta["parity"]["max_score_diff"] <= FP32_TOLERANCE.score * float(detector.post.score_max - detector.post.score_min)
    assert meta["files"] == {"onnx": "model.onnx"} and meta["versions"]["onnxruntime"] == ort.__version__

    images = _test_images(32)  # images the export's own check did not see, in a batch of another size
    graph = _graph_outputs(result.directory, images)
    with torch.inference_mode():
        found = detector.detect(images)
    assert graph["label"].dtype == np.int64 and graph["anomaly_map"].shape == (3, 32, 32)
    np.testing.assert_array_equal(graph["label"], found.label.numpy())
    np.testing.assert_allclose(graph["score"], found.score.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(graph["normalized_score"], found.normalized_score.numpy(), atol=1e-4)
    np.testing.assert_allclose(graph["anomaly_map"], found.anomaly_map.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(graph["normalized_map"], found.normalized_map.numpy(), atol=1e-4)


def test_fixed_batch_and_fp16(runs, tmp_path) -> None:
    full = export(runs / "padim", tmp_path / "fp32", batch=2)
    half = export(runs / "padim", tmp_path / "fp16", batch=2, fp16=True)
    session = ort.InferenceSession(str(half.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 32, 32]
    assert half.metadata["precision"] == "fp16" and half.parity["tolerance"]["score"] > full.parity["tolerance"]["score"]
    # PaDiM's constants are its per-position covariances: stored in half precision, the file is about half
    assert (half.directory / "model.onnx").stat().st_size < 0.6 * (full.directory / "model.onnx").stat().st_size


def test_image_only_model_has_no_map_outputs(runs, tmp_path) -> None:
    result = export(runs / "dfkde", tmp_path / "export")
    assert result.metadata["outputs"] == ["score", "normalized_score", "label"] and not result.metadata["has_map"]
    assert result.metadata["thresholds"]["pixel"] is None and result.parity["max_map_diff"] is None
    assert set(_graph_outputs(result.directory, _test_images(40, 1))) == {"score", "normalized_score", "label"}


def test_ensemble_folder_exports_with_its_member_resizing_and_ranks(runs, tmp_path) -> None:
    """Members at 32 and 40 px fused by ranks: the graph holds the antialiased resize and the rank search."""
    built = ad_core.build_ensemble([runs / "padim", runs / "dfkde"], tmp_path / "ensemble", fusion="rank_mean",
                                   write_maps=False)
    result = export(built.output_dir, tmp_path / "export", batch="dynamic")
    assert result.metadata["model"] == "ensemble" and result.metadata["settings"]["fusion"] == "rank_mean"
    assert result.metadata["input"]["height"] == 40
    images = _test_images(40)
    with torch.inference_mode():
        found = load_model(built.output_dir).detect(images)
    np.testing.assert_allclose(_graph_outputs(result.directory, images)["score"], found.score.numpy(), atol=1e-4)


def test_a_graph_that_disagrees_is_refused_and_nothing_is_written(runs, tmp_path, monkeypatch) -> None:
    from ad_core.exporting.graph import DetectorGraph

    real = DetectorGraph.forward

    def drifting(self, image):
        score, *rest = real(self, image)
        return (score * 1.01, *rest)  # what a resize or normalisation slip does to a score

    monkeypatch.setattr(DetectorGraph, "forward", drifting)
    with pytest.raises(ExportError, match="disagrees with the torch detector.*score differs"):
        export(runs / "padim", tmp_path / "export")
    assert not (tmp_path / "export").exists() and list(tmp_path.iterdir()) == []


def _unexportable(monkeypatch, name: str) -> None:
    entry = get_registry().models[name]
    spec = dataclasses.replace(entry.spec, exportable=False, export_note="its sampler runs a data-dependent loop")
    monkeypatch.setitem(get_registry().models, name, dataclasses.replace(entry, spec=spec))


def test_a_model_declared_unexportable_is_refused_with_its_reason(runs, tmp_path, monkeypatch) -> None:
    _unexportable(monkeypatch, "padim")
    with pytest.raises(NotExportableError, match="padim cannot be exported: its sampler runs"):
        export(runs / "padim", tmp_path / "export")
    result = CliRunner().invoke(main, ["export", str(runs / "padim"), "--output", str(tmp_path / "cli")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "padim cannot be exported: its sampler runs a data-dependent loop" in result.output


def test_spec_must_say_why_it_cannot_be_exported() -> None:
    spec = ModelSpec(name="m", paradigm="p", factory="x:y", exportable=False)
    with pytest.raises(SpecError, match="export_note"):
        spec.validate()
    dataclasses.replace(spec, export_note="reason").validate()


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "0"], "batch must be a positive integer or 'dynamic'"),
    (["--batch", "many"], "batch must be a positive integer or 'dynamic'"),
    (["--output", "{runs}/stfpm"], "not an export"),
])
def test_cli_user_errors_are_one_line(runs, args, message) -> None:
    result = CliRunner().invoke(main, ["export", str(runs / "padim"), *[a.format(runs=runs) for a in args]])
    assert result.exit_code == 1 and "Traceback" not in result.output and message in result.output


def test_cli_on_a_folder_that_is_no_run(tmp_path) -> None:
    result = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output and "model.json" in result.output


def test_cli_exports_and_reports_parity(runs, tmp_path) -> None:
    result = CliRunner().invoke(main, ["export", str(runs / "stfpm"), "--output", str(tmp_path / "e"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["parity"]["label_mismatches"] == 0
    again = CliRunner().invoke(main, ["export", str(runs / "stfpm"), "--output", str(tmp_path / "e")])
    assert again.exit_code == 0 and "parity on 8 test images" in again.output  # an earlier export is replaced


@pytest.mark.parametrize(("change", "message"), [({"format": "other"}, "not an ad-core export"),
                                                 ({"format_version": 2}, "format_version 2")])
def test_reader_refuses_other_formats_and_newer_versions(tmp_path, change, message) -> None:
    (tmp_path / "model.json").write_text(json.dumps({"format": "ad-core-export", "format_version": 1, **change}))
    with pytest.raises(ValueError, match=message):
        read_export_metadata(tmp_path)


def test_openvino_export_checks_its_own_parity(runs, tmp_path) -> None:
    pytest.importorskip("openvino")
    result = export(runs / "stfpm", tmp_path / "export", format="openvino")
    assert (result.directory / "model.xml").is_file() and (result.directory / "model.bin").is_file()
    assert result.metadata["files"]["openvino"] == "model.xml"
    assert result.parity["openvino"]["images"] == 8 and result.parity["openvino"]["label_mismatches"] == 0


def test_a_graph_that_cannot_run_is_an_export_error(runs, tmp_path, monkeypatch) -> None:
    def broken(path):
        def run(images):
            raise RuntimeError("Split size 64 exceeds the remaining size of the selected axis, 3")

        return run

    monkeypatch.setattr("ad_core.exporting.exporter.onnxruntime_runner", broken)
    with pytest.raises(ExportError, match="fails on 8 image.*Split size 64"):
        export(runs / "padim", tmp_path / "export", batch="dynamic")
    assert not (tmp_path / "export").exists()
