"""Export folders for the tests, built without torch: tiny ONNX graphs (the `onnx` helper API) that obey the
export contract, with their `model.json`.

The graph scores an image by its brightness so that a test can compute the expected result independently:
`anomaly_map` = the mean over the three channels of the [0,1] input ([N,H,W]), `score` = the map's maximum,
`normalized_score` / `normalized_map` = `(value - threshold) / (max - min) + 0.5` clipped to [0,1], and
`label` = `score >= threshold` as int64 (the post-processor of ad-core).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
THRESHOLD = 0.5
SCORE_RANGE = (0.2, 0.8)
PIXEL_THRESHOLD = 0.4
MAP_RANGE = (0.0, 1.0)


def _normalize_nodes(helper: Any, value: str, out: str, threshold: float, low: float, high: float,
                     prefix: str) -> list[Any]:
    consts = {f"{prefix}_t": threshold, f"{prefix}_span": high - low, f"{prefix}_half": 0.5, f"{prefix}_lo": 0.0,
              f"{prefix}_hi": 1.0}
    nodes = [helper.make_node("Constant", [], [name], value_float=v) for name, v in consts.items()]
    nodes += [
        helper.make_node("Sub", [value, f"{prefix}_t"], [f"{prefix}_d"]),
        helper.make_node("Div", [f"{prefix}_d", f"{prefix}_span"], [f"{prefix}_q"]),
        helper.make_node("Add", [f"{prefix}_q", f"{prefix}_half"], [f"{prefix}_s"]),
        helper.make_node("Clip", [f"{prefix}_s", f"{prefix}_lo", f"{prefix}_hi"], [out]),
    ]
    return nodes


def build_graph(path: Path, height: int, width: int, batch: int | None, has_map: bool = True) -> None:
    """Write a contract-obeying ONNX graph for [batch or dynamic, 3, height, width] float32 images."""
    import onnx
    from onnx import TensorProto, helper

    n: int | str = "N" if batch is None else batch
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["anomaly_map"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2], keepdims=0),
        *_normalize_nodes(helper, "score", "normalized_score", THRESHOLD, *SCORE_RANGE, prefix="img"),
        helper.make_node("Constant", [], ["thr"], value_float=THRESHOLD),
        helper.make_node("GreaterOrEqual", ["score", "thr"], ["is_bad"]),
        helper.make_node("Cast", ["is_bad"], ["label"], to=TensorProto.INT64),
    ]
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [n]),
               helper.make_tensor_value_info("normalized_score", TensorProto.FLOAT, [n]),
               helper.make_tensor_value_info("label", TensorProto.INT64, [n])]
    if has_map:
        nodes += _normalize_nodes(helper, "anomaly_map", "normalized_map", PIXEL_THRESHOLD, *MAP_RANGE, prefix="px")
        outputs += [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [n, height, width]),
                    helper.make_tensor_value_info("normalized_map", TensorProto.FLOAT, [n, height, width])]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 3, height, width])
    graph = helper.make_graph(nodes, "brightness", [image], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def metadata(height: int, width: int, batch: int | None, has_map: bool = True) -> dict[str, Any]:
    """The `model.json` of the contract for the graph above."""
    outputs = ["score", "normalized_score", "label"] + (["anomaly_map", "normalized_map"] if has_map else [])
    return {
        "format": "ad-core-export", "format_version": 1, "model": "brightness", "variant": None, "settings": {},
        "input": {"height": height, "width": width, "channels": 3, "layout": "NCHW", "range": [0, 1],
                  "color": "RGB", "resize": {"library": "Pillow", "filter": "bilinear", "reducing_gap": None}},
        "batch": "dynamic" if batch is None else batch, "outputs": outputs, "has_map": has_map,
        "thresholds": {"image": THRESHOLD, "pixel": PIXEL_THRESHOLD if has_map else None},
        "normalization": {"score_min": SCORE_RANGE[0], "score_max": SCORE_RANGE[1],
                          "map_min": MAP_RANGE[0], "map_max": MAP_RANGE[1]},
        "opset": OPSET, "precision": "fp32", "versions": {"ad-core": "0.1.0"},
        "files": {"onnx": "model.onnx"},
        "parity": {"images": 0, "source": "generated", "max_score_diff": 0.0, "max_normalized_score_diff": 0.0,
                   "max_map_diff": 0.0, "label_mismatches": 0, "tolerance": {}},
    }


def expected(image_rgb: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """What the brightness graph must return for an RGB uint8 image, computed with Pillow and numpy alone."""
    from PIL import Image

    img = Image.fromarray(image_rgb, "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR, reducing_gap=None)
    amap = (np.asarray(img, dtype=np.float32) / np.float32(255.0)).mean(axis=2)
    score = float(amap.max())
    return {"anomaly_map": amap, "score": score,
            "normalized_score": min(max((score - THRESHOLD) / (SCORE_RANGE[1] - SCORE_RANGE[0]) + 0.5, 0.0), 1.0),
            "label": score >= THRESHOLD,
            "normalized_map": np.clip((amap - PIXEL_THRESHOLD) / (MAP_RANGE[1] - MAP_RANGE[0]) + 0.5, 0, 1)}
