"""`Detector`: an export folder loaded for scoring image files, uploads or arrays without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ad_runtime.backends import Backend, OnnxRuntimeBackend, OpenVinoBackend
from ad_runtime.images import ImageReadError, collect_images, from_array, read_image, to_input, to_rgb
from ad_runtime.metadata import ExportInfo, read_export_info

ImageInput = str | Path | np.ndarray | Image.Image
DEFAULT_BATCH = 16  # images per graph call when the graph takes any batch size


@dataclass
class RuntimePrediction:
    """One image's result, with the fields of `adcore predict`; maps are at the export's input size."""

    path: Path | None  # None for arrays and uploads
    original_size: tuple[int, int]  # (height, width) of the image given
    score: float
    normalized_score: float  # 0-1, the stored threshold at 0.5
    label: bool  # True: anomalous at the stored threshold
    threshold: float
    anomaly_map: np.ndarray | None  # None for models without maps
    normalized_map: np.ndarray | None  # None also for runs without a pixel threshold


class Detector:
    """An exported detector: decodes and resizes as training did, runs the graph in batches, reads its outputs."""

    def __init__(self, info: ExportInfo, backend: Backend) -> None:
        self.info = info
        self.backend = backend

    @classmethod
    def load(cls, export_dir: str | Path, *, backend: Literal["onnxruntime", "openvino"] = "onnxruntime",
             threads: int | None = None, providers: list[str] | None = None) -> Detector:
        """Check `export_dir/model.json` and load its graph; `ExportError` says what is wrong and how to fix it."""
        info = read_export_info(export_dir)
        if backend == "onnxruntime":
            engine: Backend = OnnxRuntimeBackend(info, providers=providers, threads=threads)
        elif backend == "openvino":
            engine = OpenVinoBackend(info, threads=threads)
        else:
            raise ValueError(f"unknown backend {backend!r}: use 'onnxruntime' or 'openvino'")
        return cls(info, engine)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) every image is resized to."""
        return self.info.height, self.info.width

    def predict(self, inputs: ImageInput | Sequence[ImageInput], batch_size: int = DEFAULT_BATCH,
                unreadable: list[tuple[Path, str]] | None = None) -> list[RuntimePrediction]:
        """Score image files (folders are searched), HxWx3 uint8 RGB arrays or Pillow images, in input order.

        With `unreadable`, a file that cannot be decoded is recorded there (path, reason) and the others are
        still scored; without it, the first such file raises its `ImageReadError`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if any(isinstance(item, (str, Path)) for item in items):
            items = _expand_paths(items)
        results: list[RuntimePrediction] = []
        step = self.backend.batch or batch_size
        for start in range(0, len(items), step):
            paths: list[Path | None] = []
            pictures: list[Image.Image] = []
            for item in items[start : start + step]:
                try:
                    pictures.append(_as_image(item))
                except ImageReadError as exc:
                    if unreadable is None or not isinstance(item, (str, Path)):
                        raise
                    unreadable.append((Path(item), str(exc)))
                    continue
                paths.append(Path(item) if isinstance(item, (str, Path)) else None)
            if pictures:
                results.extend(self.predict_images(pictures, paths))
        return results

    def predict_images(self, pictures: Sequence[Image.Image], paths: Sequence[Path | None] | None = None
                       ) -> list[RuntimePrediction]:
        """Score decoded RGB images (any number: split and padded to the graph's batch size)."""
        paths = list(paths) if paths is not None else [None] * len(pictures)
        batch = np.stack([to_input(p, self.info.height, self.info.width) for p in pictures])
        outputs = self._run(batch)
        maps, normalized = self.info.has_map, self.info.has_normalized_map
        return [RuntimePrediction(
            path=path,
            original_size=(picture.height, picture.width),
            score=float(outputs["score"][i]),
            normalized_score=float(outputs["normalized_score"][i]),
            label=bool(outputs["label"][i]),
            threshold=self.info.image_threshold,
            anomaly_map=outputs["anomaly_map"][i].astype(np.float32) if maps else None,
            normalized_map=outputs["normalized_map"][i].astype(np.float32) if normalized else None,
        ) for i, (path, picture) in enumerate(zip(paths, pictures))]

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on any number of rows: a fixed-batch graph gets chunks of its size, the last one
        padded with copies of its first row (rows are independent; the padding's outputs are dropped)."""
        size = self.backend.batch
        if size is None:
            return self.backend.run(batch)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            pad = size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
            out = self.backend.run(chunk)
            parts.append({name: value[: size - pad] for name, value in out.items()})
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def describe(self) -> dict[str, Any]:
        """The export's metadata and the engine running it (what `GET /model` answers)."""
        return {**self.info.raw, "runtime": {"backend": self.backend.name, "input_size": list(self.input_size),
                                             "batch": self.backend.batch or "dynamic"}}


def _expand_paths(items: list[ImageInput]) -> list[ImageInput]:
    """Folders among the inputs become their image files; other items stay in place."""
    expanded: list[ImageInput] = []
    for item in items:
        expanded.extend(collect_images([item]) if isinstance(item, (str, Path)) else [item])
    return expanded


def _as_image(item: ImageInput) -> Image.Image:
    if isinstance(item, (str, Path)):
        return read_image(Path(item))
    if isinstance(item, Image.Image):
        return to_rgb(item)
    return from_array(item)

