"""The exported graph: a detector's whole path after decoding (pre-processing, model, map smoothing and resize,
post-processing) as one module with the output names of the export contract, and its ONNX file.

The graph calls `Detector.detect`, the very method `adcore predict` runs, so the two cannot drift apart. It is
traced with torch's TorchScript-based exporter (`dynamo=False`): several models steer their eager code by
tensor values (exact pruned nearest-neighbour search, checks that raise on bad input), which `torch.export`
refuses and the tracer records as the path taken on the example batch. Where that path would differ for
other inputs, the code takes a fixed form while exporting (`torch.onnx.is_in_onnx_export()`: whole batches in
`image_chunks`, `graph_neighbours` in the memory banks' search, `count_at_most` in an ensemble's ranks), and
the parity check at every export catches any path that still does not hold.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from torch import nn

from ad_core.detector import Detection, Detector
from ad_core.exporting.errors import ExportError

if TYPE_CHECKING:
    import onnx

OPSET = 18  # ONNX Resize gained `antialias` (an ensemble resizes images for its members) in opset 18
INPUT_NAME = "image"
IMAGE_OUTPUTS = ("score", "normalized_score", "label")
MAP_OUTPUT = "anomaly_map"
NORMALIZED_MAP_OUTPUT = "normalized_map"
FP16_MIN_ELEMENTS = 1024  # smaller constants (biases, thresholds) stay float32: nothing to gain, precision to lose


class DetectorGraph(nn.Module):
    """[N,3,H,W] images in [0,1] -> the outputs named by `output_names`, in that order."""

    def __init__(self, detector: Detector, has_map: bool, has_normalized_map: bool) -> None:
        super().__init__()
        self.detector = detector
        self.has_map = has_map
        self.has_normalized_map = has_normalized_map

    @property
    def output_names(self) -> tuple[str, ...]:
        names = IMAGE_OUTPUTS + ((MAP_OUTPUT,) if self.has_map else ())
        return names + ((NORMALIZED_MAP_OUTPUT,) if self.has_normalized_map else ())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = self.detector.detect(image)
        outputs = [found.score, found.normalized_score, found.label]
        if self.has_map:
            outputs.append(found.anomaly_map)
        if self.has_normalized_map:
            outputs.append(found.normalized_map)
        return tuple(outputs)


def detector_graph(detector: Detector, found: Detection) -> DetectorGraph:
    """The graph module of a calibrated detector, its outputs those the detector returned in `found`."""
    return DetectorGraph(detector.eval(), found.anomaly_map is not None, found.normalized_map is not None)


def _antialiased_resize(g, image, output_size, align_corners, *scales, cubic: bool = False):  # noqa: ANN001, ANN202
    """ONNX for `F.interpolate(..., mode="bilinear" or "bicubic", antialias=True)` (an ensemble shrinking images
    for a member; a ViT resampling its position embedding to the input's grid), which torch's exporter lacks:
    opset 18's Resize with `antialias`, half-pixel centres and the filter renormalised over the pixels inside the
    image (`exclude_outside`), as torch computes it; torch's antialiased cubic filter has a = -0.5."""
    from torch.onnx import symbolic_helper

    if symbolic_helper._maybe_get_const(align_corners, "b"):
        raise ExportError("antialiased resizing with align_corners=True has no ONNX form")
    batch_channels = g.op("Slice", g.op("Shape", image), g.op("Constant", value_t=torch.tensor([0])),
                          g.op("Constant", value_t=torch.tensor([2])))
    size = g.op("Cast", output_size, to_i=7) if symbolic_helper._is_value(output_size) else \
        g.op("Constant", value_t=torch.tensor(symbolic_helper._get_const(output_size, "is", "size"), dtype=torch.long))
    sizes = g.op("Concat", batch_channels, size, axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    mode = {"mode_s": "cubic", "cubic_coeff_a_f": -0.5} if cubic else {"mode_s": "linear"}
    return g.op("Resize", image, empty, empty, sizes, antialias_i=1, **mode,
                coordinate_transformation_mode_s="half_pixel", exclude_outside_i=1)


def _antialiased_bicubic(g, image, output_size, align_corners, *scales):  # noqa: ANN001, ANN202 (symbolic)
    return _antialiased_resize(g, image, output_size, align_corners, *scales, cubic=True)


def register_resize_forms() -> None:
    """The ONNX forms of antialiased bilinear and bicubic resizing (torch's exporter has none)."""
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _antialiased_resize, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _antialiased_bicubic, OPSET)


def write_onnx(graph: DetectorGraph, sample: torch.Tensor, path: Path, dynamic_batch: bool, fp16: bool) -> None:
    """Trace `graph` on `sample` into `path`; `fp16` stores the large constants in half precision."""
    register_resize_forms()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in graph.output_names}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the fixed paths described above
        torch.onnx.export(graph, (sample,), str(path), input_names=[INPUT_NAME], output_names=list(graph.output_names),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          dynamic_axes=axes if dynamic_batch else None)
    if fp16:
        import onnx

        model = onnx.load(str(path))
        halve_constants(model)
        onnx.save(model, str(path))


def halve_constants(model: onnx.ModelProto) -> int:
    """Store float32 initializers of at least `FP16_MIN_ELEMENTS` as float16, each read back through a Cast to
    float32: half the file and the memory of the weights (and of a memory bank), arithmetic unchanged in float32,
    which every onnxruntime CPU kernel supports. Returns how many constants were halved."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or _numel(tensor) < FP16_MIN_ELEMENTS:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float16"), f"{tensor.name}.fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT,
                                      name=f"{tensor.name}.to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def _numel(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count
