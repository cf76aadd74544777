"""Running an exported graph from Python: onnxruntime for the ONNX file, OpenVINO for its IR."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ad_core.exporting.errors import ExportError
from ad_core.exporting.graph import INPUT_NAME
from ad_core.exporting.parity import GraphRunner


def require_onnx() -> None:
    """Refuse an export before any work when the packages it needs are missing."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting needs {' and '.join(missing)}: pip install 'ad-core[export]'")


def onnxruntime_runner(path: Path) -> GraphRunner:
    """A CPU onnxruntime session of the graph at `path`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda images: dict(zip(names, session.run(names, {INPUT_NAME: images})))


def require_openvino() -> None:
    """Refuse `--format openvino` before any work when the package is missing."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise ExportError("--format openvino needs the openvino package: pip install openvino "
                          "(or export with --format onnx)") from exc


def write_openvino(onnx_path: Path, xml_path: Path, fp16: bool) -> GraphRunner:
    """Convert the ONNX graph to OpenVINO IR (`model.xml` + `model.bin`) and return a CPU runner of the IR."""
    import openvino

    model = openvino.convert_model(str(onnx_path))
    openvino.save_model(model, str(xml_path), compress_to_fp16=fp16)
    # f32 arithmetic: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 (2-3 significant digits)
    compiled = openvino.Core().compile_model(str(xml_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.get_any_name() for o in compiled.outputs]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled({INPUT_NAME: images})
        return {name: np.asarray(result[output]) for name, output in zip(names, compiled.outputs)}

    return run
