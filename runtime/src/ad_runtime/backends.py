"""The engines that run an export's graph: onnxruntime (always) and OpenVINO (optional extra).

Both take one float [N,3,H,W] batch and return the graph's outputs by name. Neither keeps state between calls:
onnxruntime's `InferenceSession.run` may be called from several threads at once on one session (ONNX Runtime
guarantees `Run` is thread-safe, and its Python binding releases the GIL while it runs), and OpenVINO gets one
infer request per call, so the HTTP server shares one backend between concurrent requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ad_runtime.metadata import ExportError, ExportInfo


class Backend(Protocol):
    """A loaded graph: its input's batch size (None when dynamic) and element type, and one call to run it."""

    batch: int | None
    input_dtype: type[np.floating]
    name: str

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on a [N,3,H,W] batch; returns every output by name."""
        ...


class OnnxRuntimeBackend:
    """onnxruntime on the CPU (or the providers given): the default engine."""

    name = "onnxruntime"

    def __init__(self, info: ExportInfo, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(info.onnx_path), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for damaged or unsupported graphs
            raise ExportError(f"onnxruntime cannot load {info.onnx_path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "image":
            names = [i.name for i in inputs]
            raise ExportError(f"{info.onnx_path} must take one input named 'image', it takes {names}")
        self.batch = _check_shape(list(inputs[0].shape), info, info.onnx_path)
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        missing = set(info.outputs) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise ExportError(f"{info.onnx_path} lacks the outputs {sorted(missing)} that model.json lists")
        self.output_names = list(info.outputs)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {"image": images.astype(self.input_dtype, copy=False)})
        return dict(zip(self.output_names, values))


class OpenVinoBackend:
    """OpenVINO's CPU plugin on the IR (`model.xml`) the export converted from the same ONNX graph."""

    name = "openvino"

    def __init__(self, info: ExportInfo, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ExportError("the openvino backend needs the openvino package: pip install "
                              "'ad-runtime[openvino]'") from exc
        if info.openvino_path is None:
            raise ExportError(f"{info.directory} holds no OpenVINO model: export it with `adcore export RUN_DIR "
                              "--format openvino`, or use the onnxruntime backend")
        config = {} if threads is None else {"INFERENCE_NUM_THREADS": threads}
        try:
            self.compiled = ov.Core().compile_model(str(info.openvino_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for damaged IR files
            raise ExportError(f"OpenVINO cannot load {info.openvino_path}: {exc}") from exc
        port = self.compiled.input(0)
        if port.get_any_name() != "image":
            raise ExportError(f"{info.openvino_path} must take one input named 'image', it takes "
                              f"{port.get_any_name()!r}")
        shape = port.get_partial_shape()
        self.batch = _check_shape([d.get_length() if d.is_static else None for d in shape], info,
                                  info.openvino_path)
        self.input_dtype = np.float16 if port.get_element_type().get_type_name() == "f16" else np.float32
        self.output_names = list(info.outputs)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        results = self.compiled.create_infer_request().infer({"image": images.astype(self.input_dtype, copy=False)})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return {name: np.asarray(by_name[name]) for name in self.output_names}


def _check_shape(shape: list[int | str | None], info: ExportInfo, path: Path) -> int | None:
    """The graph's batch size (None when dynamic) after checking its input shape against model.json."""
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(fixed) != 4 or fixed[1:] != [3, info.height, info.width]:
        raise ExportError(f"{path} takes images of shape {shape}, but model.json says "
                          f"[N, 3, {info.height}, {info.width}]: the folder mixes files of two exports")
    if fixed[0] != info.batch:
        said = "dynamic" if info.batch is None else info.batch
        raise ExportError(f"{path} has batch {shape[0]!r}, but model.json says {said!r}")
    return fixed[0]
