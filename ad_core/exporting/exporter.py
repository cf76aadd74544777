"""`ad_core.export` / `adcore export`: a trained run folder (or ensemble folder) to an export folder holding one
ONNX graph (optionally its OpenVINO IR) and its `model.json`, written only when parity holds."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ad_core.checkpoint import load_model
from ad_core.detector import Detector
from ad_core.exporting.errors import ExportError, NotExportableError
from ad_core.exporting.graph import OPSET, detector_graph, write_onnx
from ad_core.exporting.metadata import FORMAT, META_NAME, ONNX_NAME, OPENVINO_NAME, export_metadata
from ad_core.exporting.parity import FP16_TOLERANCE, FP32_TOLERANCE, check_parity
from ad_core.exporting.runners import onnxruntime_runner, require_onnx, require_openvino, write_openvino
from ad_core.io import current_umask, write_json

FORMATS = ("onnx", "openvino")
PARITY_IMAGES = 8


@dataclass
class ExportResult:
    """Where the export went, its parity figures and its full `model.json`."""

    directory: Path
    parity: dict[str, Any]
    metadata: dict[str, Any]
    seconds: float


def check_batch(batch: int | str) -> int | None:
    """`batch` as a fixed size, or None for a dynamic batch."""
    if batch == "dynamic":
        return None
    try:
        size = int(batch)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or (isinstance(batch, float) and batch != size):
        raise ExportError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
    return size


def check_exportable(meta: dict[str, Any]) -> None:
    """Refuse a model (or an ensemble member) whose spec declares it cannot be exported, saying why."""
    from ad_core.plugins import get_registry

    names = [m.get("name", "") for m in meta.get("members", [])] if meta.get("kind") == "ensemble" else [meta["model"]]
    for name in names:
        spec, _ = get_registry().resolve(name)
        if not spec.exportable:
            raise NotExportableError(f"{name} cannot be exported: {spec.export_note}")


def parity_images(meta: dict[str, Any], size: tuple[int, int], count: int = PARITY_IMAGES) -> tuple[torch.Tensor, str]:
    """Up to `count` images of the run's test split, spread over it (normal and anomalous ones), as the run saw
    them; generated demo images when that split cannot be read here (moved data, another machine)."""
    from ad_core.data import DemoDataset, get_dataset

    source = meta.get("trained_on") or {}
    try:
        test = get_dataset(source["dataset"], source["category"], "test", image_size=size, root=source.get("root"))
        if len(test) == 0:
            raise ValueError("empty test split")
        picks = sorted({round(i * (len(test) - 1) / max(1, count - 1)) for i in range(min(count, len(test)))})
        return torch.stack([test[i].image for i in picks]), "test images"
    except (KeyError, ValueError, OSError):
        half = max(1, count // 2)
        demo = DemoDataset(category="weave", split="test", image_size=size, n_test_normal=half,
                           n_test_anomalous=count - half)
        return torch.stack([demo[i].image for i in range(len(demo))]), "generated"


def _prepare_output(output: Path) -> Path:
    """A fresh staging folder beside `output`; `output` itself may only be empty or an earlier export."""
    if output.exists():
        if not output.is_dir():
            raise ExportError(f"{output} exists and is not a folder: choose another --output")
        if any(output.iterdir()) and not (output / META_NAME).is_file():
            raise ExportError(f"{output} is a non-empty folder that holds no export: choose another --output")
        if (output / META_NAME).is_file() and FORMAT not in (output / META_NAME).read_text(errors="replace"):
            raise ExportError(f"{output} holds a model.json that is not an export (a run folder?): choose another "
                              "--output")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp's folder is private; the export is an ordinary folder
    return staging


def export_detector(detector: Detector, output: str | Path, *, images: torch.Tensor, source: str,
                    format: str = "onnx", fp16: bool = False, batch: int | str = 1) -> ExportResult:
    """Export a calibrated detector to `output`, parity checked on `images` (from `source`, as the metadata says).

    `detector.meta` is its checkpoint's metadata (`load_model` sets it): the model's name, settings, image size."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; valid ones: {', '.join(FORMATS)}")
    require_onnx()
    if format == "openvino":
        require_openvino()
    size = check_batch(batch)
    if not detector.post.calibrated:
        raise ExportError("this detector has no threshold: export a trained run folder (ad_core.train writes one)")
    started = time.perf_counter()
    output = Path(output)
    staging = _prepare_output(output)
    try:
        detector = detector.cpu().eval()
        sample = images[:1] if size is None else images[torch.arange(size) % len(images)]
        with torch.inference_mode():
            reference = detector.detect(images)
        graph = detector_graph(detector, reference)
        write_onnx(graph, sample, staging / ONNX_NAME, dynamic_batch=size is None, fp16=fp16)
        tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
        parity = {**check_parity(detector, reference, onnxruntime_runner(staging / ONNX_NAME), images, size,
                                 tolerance),
                  "source": source}
        if format == "openvino":
            runner = write_openvino(staging / ONNX_NAME, staging / OPENVINO_NAME, fp16)
            parity["openvino"] = check_parity(detector, reference, runner, images, size, tolerance)
        meta = export_metadata(detector, graph.output_names, "dynamic" if size is None else size,
                               "fp16" if fp16 else "fp32", OPSET, parity, openvino=format == "openvino")
        write_json(staging / META_NAME, meta)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(output, parity, meta, time.perf_counter() - started)


def export(run_dir: str | Path, output: str | Path | None = None, *, format: str = "onnx", fp16: bool = False,
           batch: int | str = 1, parity_count: int = PARITY_IMAGES) -> ExportResult:
    """Export a trained run folder or ensemble folder; `output` defaults to `RUN_DIR/export-<format>`.

    The graph takes float32 [N,3,H,W] RGB images in [0,1] at the run's input size (decoded and resized as in
    training) and holds everything after that; see docs/architecture.md. Parity with the torch detector is
    checked on the run's test images (else generated ones) and written into `model.json`: an `ExportError`
    when a difference exceeds the tolerance (`FP32_TOLERANCE`, `FP16_TOLERANCE` with `fp16`).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; valid ones: {', '.join(FORMATS)}")
    require_onnx()
    if format == "openvino":
        require_openvino()
    check_batch(batch)
    detector = load_model(run_dir)
    check_exportable(detector.meta)
    images, source = parity_images(detector.meta, detector.image_size, parity_count)
    target = Path(output) if output is not None else Path(run_dir) / f"export-{format}"
    return export_detector(detector, target, images=images, source=source, format=format, fp16=fp16, batch=batch)
